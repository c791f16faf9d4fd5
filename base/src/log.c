#include <aegis/log.h>

#include <errno.h>
#include <stdio.h>
#include <string.h>
#include <time.h>

/* One line is a log record, not a document: long lines are cut here. */
#define LINE_MAX_BYTES 1024

static const char *const names[] = {"error", "warn", "info", "debug", "trace"};

const char *aegis_log_level_name(enum aegis_log_level level)
{
    if ((unsigned)level < sizeof(names) / sizeof(names[0]))
        return names[level];
    return "unknown";
}

int aegis_log_level_parse(const char *name, enum aegis_log_level *plevel)
{
    for (unsigned i = 0; i < sizeof(names) / sizeof(names[0]); i++) {
        if (strcmp(name, names[i]) == 0) {
            *plevel = (enum aegis_log_level)i;
            return 0;
        }
    }
    return -EINVAL;
}

void aegis_log_vemit(const struct aegis_log *log, enum aegis_log_level level, const char *fmt,
                     va_list ap)
{
    if (!AEGIS_LOG_ENABLED(log, level))
        return;
    char line[LINE_MAX_BYTES];
    vsnprintf(line, sizeof(line), fmt, ap);
    log->write(level, line, log->user_data);
}

void aegis_log_emit(const struct aegis_log *log, enum aegis_log_level level, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    aegis_log_vemit(log, level, fmt, ap);
    va_end(ap);
}

void aegis_log_stderr_write(enum aegis_log_level level, const char *line, void *user_data)
{
    (void)user_data;
    struct timespec ts;
    struct tm tm;
    char when[32];
    clock_gettime(CLOCK_REALTIME, &ts);
    gmtime_r(&ts.tv_sec, &tm);
    strftime(when, sizeof(when), "%Y-%m-%dT%H:%M:%S", &tm);
    fprintf(stderr, "%s.%03ldZ level=%s %s\n", when, ts.tv_nsec / 1000000,
            aegis_log_level_name(level), line);
}
