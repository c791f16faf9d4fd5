/*
 * Log sink. Libraries never log on their own: they call the sink a program
 * gives them. Messages are key=value lines ("conn=3 method=/a/b status=14").
 * AEGIS_LOG checks the level before any argument is formatted.
 */
#ifndef AEGIS_LOG_H
#define AEGIS_LOG_H

#include <stdarg.h>

#ifdef __cplusplus
extern "C" {
#endif

enum aegis_log_level {
    AEGIS_LOG_ERROR = 0,
    AEGIS_LOG_WARN = 1,
    AEGIS_LOG_INFO = 2,
    AEGIS_LOG_DEBUG = 3,
    AEGIS_LOG_TRACE = 4,
};

struct aegis_log {
    /* Messages above this level are dropped before formatting. */
    enum aegis_log_level level;
    /* Called with the finished line (no trailing newline); may be NULL. */
    void (*write)(enum aegis_log_level level, const char *line, void *user_data);
    void *user_data;
};

/* aegis_log_emit formats and delivers one line; log may be NULL (no-op).
 * Lines longer than 1023 bytes are truncated. */
void aegis_log_emit(const struct aegis_log *log, enum aegis_log_level level, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
void aegis_log_vemit(const struct aegis_log *log, enum aegis_log_level level, const char *fmt,
                     va_list ap) __attribute__((format(printf, 3, 0)));

/* aegis_log_stderr_write is a ready sink: "<iso8601> level=info <line>" on stderr. */
void aegis_log_stderr_write(enum aegis_log_level level, const char *line, void *user_data);

/* aegis_log_level_name returns "error", "warn", ... */
const char *aegis_log_level_name(enum aegis_log_level level);

/* aegis_log_level_parse maps "error".."trace" to a level; -EINVAL otherwise. */
int aegis_log_level_parse(const char *name, enum aegis_log_level *plevel);

static inline int aegis_log_enabled(const struct aegis_log *log, enum aegis_log_level level)
{
    return log && log->write && level <= log->level;
}

#define AEGIS_LOG_ENABLED(log, lvl) aegis_log_enabled((log), (lvl))
#define AEGIS_LOG(log, lvl, ...)                                                                   \
    do {                                                                                           \
        if (AEGIS_LOG_ENABLED(log, lvl))                                                           \
            aegis_log_emit((log), (lvl), __VA_ARGS__);                                             \
    } while (0)

#ifdef __cplusplus
}
#endif
#endif
