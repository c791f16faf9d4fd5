/*
 * MapSnapshot JSON -> struct aegis_policy (the only json-c user in bpf/).
 * Schema: seed 004 plus egress_mode, ingress_mode, expiry_action, deny and
 * per-entry id / ttl_seconds / direction (see aegis/policy.h).
 */
#include <aegis/err.h>
#include <aegis/policy.h>

#include <errno.h>
#include <json-c/json.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>

/* Policies are flat: object -> array -> object. Deeper input is an attack or
 * a mistake, and json-c's recursion should stay shallow. */
#define JSON_MAX_DEPTH 8

struct ctx {
    char *err;
    size_t errlen;
};

static int fail(struct ctx *c, int rv, const char *fmt, ...) __attribute__((format(printf, 3, 4)));
static int fail(struct ctx *c, int rv, const char *fmt, ...)
{
    if (c->err && c->errlen) {
        va_list ap;
        va_start(ap, fmt);
        vsnprintf(c->err, c->errlen, fmt, ap);
        va_end(ap);
    }
    return rv;
}

static int get_uint(struct ctx *c, const char *where, const char *key, struct json_object *v,
                    uint64_t max, uint64_t *out)
{
    if (!json_object_is_type(v, json_type_int))
        return fail(c, AEGIS_ERR_MALFORMED, "%s%s: must be an integer", where, key);
    int64_t x = json_object_get_int64(v);
    if (x < 0 || (uint64_t)x > max)
        return fail(c, AEGIS_ERR_CONFIG, "%s%s %lld out of range 0..%llu", where, key, (long long)x,
                    (unsigned long long)max);
    *out = (uint64_t)x;
    return 0;
}

static int get_enum(struct ctx *c, const char *where, const char *key, struct json_object *v,
                    const char *const *names, size_t n, uint32_t *out, const char *hint)
{
    if (!json_object_is_type(v, json_type_string))
        return fail(c, AEGIS_ERR_MALFORMED, "%s%s: must be a string (%s)", where, key, hint);
    const char *s = json_object_get_string(v);
    for (size_t i = 0; i < n; i++) {
        if (names[i] && strcmp(s, names[i]) == 0) {
            *out = (uint32_t)i;
            return 0;
        }
    }
    return fail(c, AEGIS_ERR_CONFIG, "%s%s: unknown value \"%.40s\" (%s)", where, key, s, hint);
}

static const char *const proto_names[] = {"any", "tcp", "udp", "icmp"};
static const char *const mode_names[] = {"off", "deny", "allow"};
static const char *const expiry_names[] = {"fail_open", "fail_closed"};
static const char *const dir_names[] = {"default", "egress", "ingress", "both"};

static int parse_rule(struct ctx *c, struct aegis_policy *p, enum aegis_policy_list list,
                      size_t idx, struct json_object *o)
{
    char where[48];
    snprintf(where, sizeof(where), "%s[%zu]: ", aegis_policy_list_name(list), idx);
    if (!json_object_is_type(o, json_type_object))
        return fail(c, AEGIS_ERR_MALFORMED, "%smust be an object", where);
    struct aegis_policy_rule r;
    memset(&r, 0, sizeof(r));
    int have_cidr = 0;
    struct json_object_iterator it = json_object_iter_begin(o), end = json_object_iter_end(o);
    for (; !json_object_iter_equal(&it, &end); json_object_iter_next(&it)) {
        const char *k = json_object_iter_peek_name(&it);
        struct json_object *v = json_object_iter_peek_value(&it);
        uint64_t u;
        int rv;
        if (strcmp(k, "cidr") == 0 || (list == AEGIS_POLICY_EDGES && strcmp(k, "dst_cidr") == 0)) {
            if (!json_object_is_type(v, json_type_string))
                return fail(c, AEGIS_ERR_MALFORMED, "%s%s: must be a string like \"10.0.0.0/8\"",
                            where, k);
            if (have_cidr)
                return fail(c, AEGIS_ERR_MALFORMED, "%sgive either cidr or dst_cidr, not both",
                            where);
            const char *s = json_object_get_string(v);
            char why[80];
            if (aegis_policy_parse_cidr(s, &r, why, sizeof(why)) < 0)
                return fail(c, AEGIS_ERR_CONFIG, "%sbad CIDR \"%.60s\": %s", where, s, why);
            have_cidr = 1;
        } else if (strcmp(k, "proto") == 0) {
            rv = get_enum(c, where, k, v, proto_names, 4, &r.proto, "tcp, udp, icmp or any");
            if (rv)
                return rv;
        } else if (strcmp(k, "port") == 0) {
            if (!json_object_is_type(v, json_type_int))
                return fail(c, AEGIS_ERR_MALFORMED, "%sport: must be an integer", where);
            int64_t x = json_object_get_int64(v);
            if (x < 0 || x > 65535)
                return fail(c, AEGIS_ERR_CONFIG, "%sport %lld out of range 0..65535 (0 = any)",
                            where, (long long)x);
            r.port = (uint32_t)x;
        } else if (strcmp(k, "id") == 0) {
            if ((rv = get_uint(c, where, k, v, UINT32_MAX, &u)))
                return rv;
            r.id = (uint32_t)u;
        } else if (strcmp(k, "ttl_seconds") == 0) {
            if ((rv = get_uint(c, where, k, v, UINT32_MAX, &u)))
                return rv;
            r.ttl_seconds = (uint32_t)u;
        } else if (strcmp(k, "direction") == 0) {
            rv = get_enum(c, where, k, v, dir_names, 4, &r.direction,
                          "default, egress, ingress or both");
            if (rv)
                return rv;
        } else {
            return fail(c, AEGIS_ERR_MALFORMED, "%sunknown key \"%.40s\"", where, k);
        }
    }
    if (!have_cidr)
        return fail(c, AEGIS_ERR_CONFIG, "%smissing %s", where,
                    list == AEGIS_POLICY_EDGES ? "dst_cidr" : "cidr");
    int rv = aegis_policy_add_rule(p, list, &r);
    if (rv == AEGIS_ERR_LIMIT)
        return fail(c, rv, "%smore than %u rules", where, AEGIS_POLICY_RULES_HARD_MAX);
    return rv;
}

static int parse_list(struct ctx *c, struct aegis_policy *p, enum aegis_policy_list list,
                      struct json_object *v)
{
    if (!json_object_is_type(v, json_type_array))
        return fail(c, AEGIS_ERR_MALFORMED, "%s: must be an array", aegis_policy_list_name(list));
    size_t n = json_object_array_length(v);
    if (n > AEGIS_POLICY_RULES_HARD_MAX)
        return fail(c, AEGIS_ERR_LIMIT, "%s: %zu entries exceed the hard limit %u",
                    aegis_policy_list_name(list), n, AEGIS_POLICY_RULES_HARD_MAX);
    for (size_t i = 0; i < n; i++) {
        int rv = parse_rule(c, p, list, i, json_object_array_get_idx(v, i));
        if (rv)
            return rv;
    }
    return 0;
}

static int parse_meta(struct ctx *c, struct aegis_policy *p, struct json_object *v,
                      const struct aegis_policy_limits *lim)
{
    if (!json_object_is_type(v, json_type_object))
        return fail(c, AEGIS_ERR_MALFORMED, "meta: must be an object");
    if ((size_t)json_object_object_length(v) > lim->max_meta)
        return fail(c, AEGIS_ERR_LIMIT, "meta: more than %zu entries", lim->max_meta);
    struct json_object_iterator it = json_object_iter_begin(v), end = json_object_iter_end(v);
    for (; !json_object_iter_equal(&it, &end); json_object_iter_next(&it)) {
        const char *k = json_object_iter_peek_name(&it);
        struct json_object *val = json_object_iter_peek_value(&it);
        /* meta is map<string,string>: other JSON values keep their text. */
        const char *s = json_object_is_type(val, json_type_string)
                            ? json_object_get_string(val)
                            : json_object_to_json_string_ext(val, JSON_C_TO_STRING_PLAIN);
        int rv = aegis_policy_add_meta(p, k, s ? s : "");
        if (rv)
            return rv;
    }
    return 0;
}

static int parse_top(struct ctx *c, struct aegis_policy *p, struct json_object *root,
                     const struct aegis_policy_limits *lim)
{
    if (!json_object_is_type(root, json_type_object))
        return fail(c, AEGIS_ERR_MALFORMED, "top level: must be a JSON object (a MapSnapshot)");
    int have_version = 0, have_service = 0, have_ttl = 0, have_egress = 0;
    struct json_object_iterator it = json_object_iter_begin(root), end = json_object_iter_end(root);
    for (; !json_object_iter_equal(&it, &end); json_object_iter_next(&it)) {
        const char *k = json_object_iter_peek_name(&it);
        struct json_object *v = json_object_iter_peek_value(&it);
        uint64_t u;
        int rv = 0;
        if (strcmp(k, "version") == 0) {
            rv = get_uint(c, "", k, v, INT64_MAX, &u);
            p->version = u;
            have_version = 1;
        } else if (strcmp(k, "service_id") == 0) {
            rv = get_uint(c, "", k, v, INT64_MAX, &u);
            p->service_id = u;
            have_service = 1;
        } else if (strcmp(k, "ttl_seconds") == 0) {
            rv = get_uint(c, "", k, v, UINT32_MAX, &u);
            p->ttl_seconds = (uint32_t)u;
            have_ttl = 1;
        } else if (strcmp(k, "edges") == 0) {
            rv = parse_list(c, p, AEGIS_POLICY_EDGES, v);
        } else if (strcmp(k, "allow_cidrs") == 0) {
            rv = parse_list(c, p, AEGIS_POLICY_ALLOW_CIDRS, v);
        } else if (strcmp(k, "deny") == 0) {
            rv = parse_list(c, p, AEGIS_POLICY_DENY, v);
        } else if (strcmp(k, "egress_mode") == 0) {
            rv = get_enum(c, "", k, v, mode_names, 3, &p->egress_mode, "off, deny or allow");
            have_egress = 1;
        } else if (strcmp(k, "ingress_mode") == 0) {
            rv = get_enum(c, "", k, v, mode_names, 3, &p->ingress_mode, "off, deny or allow");
        } else if (strcmp(k, "expiry_action") == 0) {
            rv = get_enum(c, "", k, v, expiry_names, 2, &p->expiry_action,
                          "fail_open or fail_closed");
        } else if (strcmp(k, "meta") == 0) {
            rv = parse_meta(c, p, v, lim);
        } else {
            rv = fail(c, AEGIS_ERR_MALFORMED, "unknown key \"%.40s\" at the top level", k);
        }
        if (rv)
            return rv;
    }
    if (!have_version || !have_service || !have_ttl)
        return fail(c, AEGIS_ERR_CONFIG, "missing required key \"%s\"",
                    !have_version   ? "version"
                    : !have_service ? "service_id"
                                    : "ttl_seconds");
    if (!have_egress)
        p->egress_mode = AEGIS_POLICY_MODE_ALLOW;
    return 0;
}

int aegis_policy_from_json(const char *json, size_t len, const struct aegis_policy_limits *limits,
                           const struct aegis_mem *mem, struct aegis_policy **ppolicy, char *err,
                           size_t errlen)
{
    struct ctx c = {err, errlen};
    struct aegis_policy_limits defl;
    if (!limits) {
        aegis_policy_limits_default(&defl);
        limits = &defl;
    }
    if (!json || !ppolicy)
        return -EINVAL;
    if (len > limits->max_json_bytes)
        return fail(&c, AEGIS_ERR_TOO_LARGE, "policy JSON is %zu bytes, over the limit of %zu", len,
                    limits->max_json_bytes);
    if (len > INT32_MAX)
        return fail(&c, AEGIS_ERR_TOO_LARGE, "policy JSON too large");
    struct json_tokener *tok = json_tokener_new_ex(JSON_MAX_DEPTH);
    if (!tok)
        return -ENOMEM;
    struct json_object *root = json_tokener_parse_ex(tok, json, (int)len);
    enum json_tokener_error jerr = json_tokener_get_error(tok);
    size_t used = json_tokener_get_parse_end(tok);
    int rv = 0;
    if (!root || jerr != json_tokener_success) {
        rv = fail(&c, AEGIS_ERR_MALFORMED, "not valid JSON at byte %zu: %s", used,
                  jerr == json_tokener_continue ? "unexpected end of input"
                                                : json_tokener_error_desc(jerr));
        goto out;
    }
    for (size_t i = used; i < len; i++) {
        if (json[i] != ' ' && json[i] != '\n' && json[i] != '\r' && json[i] != '\t') {
            rv =
                fail(&c, AEGIS_ERR_MALFORMED, "trailing data after the JSON object at byte %zu", i);
            goto out;
        }
    }
    struct aegis_policy *p;
    if ((rv = aegis_policy_new(mem, &p)))
        goto out;
    rv = parse_top(&c, p, root, limits);
    if (!rv)
        rv = aegis_policy_validate(p, limits, err, errlen);
    if (rv) {
        aegis_policy_del(p);
        goto out;
    }
    *ppolicy = p;
out:
    json_object_put(root);
    json_tokener_free(tok);
    return rv;
}
