/* server._wire: the protobuf wire format of the Evaluate RPCs' hot path, in C.
 *
 * decode: a serialised google.protobuf.Struct (a request's annotations) to plain Python
 * values. Walking a Struct's message objects from Python cost about 6 us per item of a
 * batch, the largest part of the service's own time; serialising it again (in upb's C)
 * and reading the bytes here costs a fraction of that. The input is always upb's own
 * serialisation of a message it parsed, so it is well formed; anything else is refused
 * with ValueError, never read past its end. server/convert.py keeps the Python walk as
 * the specification and the fallback; tests hold the two to the same answers.
 *
 * fill: a response template of server/wire.py, with one decision's observed values in
 * its slots. `wire._fill` is its specification and its stand-in; tests compare them.
 *
 * decide: the usual items of a batch, each read, decided, encoded and logged in C, until
 * one that is not usual; server/service.py decides that one, and is the specification.
 *
 *   Struct    { repeated FieldsEntry fields = 1; }   FieldsEntry { string key = 1; Value value = 2; }
 *   Value     { null_value = 1; double number_value = 2; string string_value = 3;
 *               bool bool_value = 4; Struct struct_value = 5; ListValue list_value = 6; }
 *   ListValue { repeated Value values = 1; }
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <stdint.h>
#include <string.h>
#include <time.h>

typedef struct {
    const uint8_t *p, *end;
} Reader;

typedef struct {
    Py_ssize_t max_depth;
    PyObject *too_deep;  /* the exception class, raised with max_depth */
} Limits;

static int
malformed(void)
{
    PyErr_SetString(PyExc_ValueError, "malformed google.protobuf.Struct");
    return -1;
}

static int
too_deep(Limits *limits)
{
    PyObject *limit = PyLong_FromSsize_t(limits->max_depth);
    if (limit != NULL) {
        PyErr_SetObject(limits->too_deep, limit);
        Py_DECREF(limit);
    }
    return -1;
}

static int
varint(Reader *r, uint64_t *out)
{
    uint64_t v = 0;
    for (int shift = 0; shift < 64; shift += 7) {
        if (r->p >= r->end)
            return malformed();
        uint8_t b = *r->p++;
        v |= (uint64_t)(b & 0x7F) << shift;
        if (!(b & 0x80)) {
            *out = v;
            return 0;
        }
    }
    return malformed();
}

/* A length-delimited field's bytes, as a reader of their own. */
static int
sub(Reader *r, Reader *out)
{
    uint64_t n;
    if (varint(r, &n) < 0)
        return -1;
    if (n > (uint64_t)(r->end - r->p))
        return malformed();
    out->p = r->p;
    out->end = r->p + n;
    r->p += n;
    return 0;
}

/* Skip a field of an unknown number: upb keeps unknown fields, groups included, and writes
 * them back when it serialises, so they reach this reader. */
static int
skip_field(Reader *r, uint64_t tag, int nesting)
{
    uint64_t n;
    Reader ignored;
    switch (tag & 7) {
    case 0:
        return varint(r, &n);
    case 1:
    case 5: {
        Py_ssize_t size = (tag & 7) == 1 ? 8 : 4;
        if (r->end - r->p < size)
            return malformed();
        r->p += size;
        return 0;
    }
    case 2:
        return sub(r, &ignored);
    case 3:  /* a group: its fields, up to the end tag of the same number */
        if (nesting >= 100)
            return malformed();
        for (;;) {
            uint64_t inner;
            if (varint(r, &inner) < 0)
                return -1;
            if ((inner & 7) == 4)
                return (inner >> 3) == (tag >> 3) ? 0 : malformed();
            if (skip_field(r, inner, nesting + 1) < 0)
                return -1;
        }
    default:
        return malformed();  /* an end of group with no start */
    }
}

static int
skip(Reader *r, uint64_t tag)
{
    return skip_field(r, tag, 0);
}

static PyObject *read_struct(Reader *r, Py_ssize_t depth, Limits *limits);

/* A string of the wire. Keys, and short values such as enum values, recur from item to item:
 * short ASCII ones are kept, interned, in a small table, so a recurring one is neither decoded
 * nor allocated again, and is the very object the schema's checks look up. */
#define KEPT 1024
#define KEPT_LENGTH 32
static PyObject *kept[KEPT];

static PyObject *
text(const uint8_t *p, Py_ssize_t n)
{
    if (n > KEPT_LENGTH)
        return PyUnicode_DecodeUTF8((const char *)p, n, NULL);
    uint32_t h = 2166136261u;
    for (Py_ssize_t i = 0; i < n; i++) {
        if (p[i] >= 0x80)
            return PyUnicode_DecodeUTF8((const char *)p, n, NULL);
        h = (h ^ p[i]) * 16777619u;
    }
    PyObject **slot = &kept[h & (KEPT - 1)];
    PyObject *s = *slot;
    if (s != NULL && PyUnicode_GET_LENGTH(s) == n && memcmp(PyUnicode_DATA(s), p, n) == 0)
        return Py_NewRef(s);
    s = PyUnicode_DecodeASCII((const char *)p, n, NULL);
    if (s == NULL)
        return NULL;
    PyUnicode_InternInPlace(&s);
    Py_XSETREF(*slot, Py_NewRef(s));
    return s;
}

/* One Value at `depth` (the depth of the object or list holding it). */
static PyObject *
read_value(Reader *r, Py_ssize_t depth, Limits *limits)
{
    PyObject *out = Py_NewRef(Py_None);  /* null_value, or no kind set */
    while (r->p < r->end) {
        uint64_t tag;
        if (varint(r, &tag) < 0)
            goto fail;
        int field = (int)(tag >> 3), wire_type = (int)(tag & 7);
        PyObject *v = NULL;
        Reader body;
        if (field == 1 && wire_type == 0) {
            uint64_t ignored;
            if (varint(r, &ignored) < 0)
                goto fail;
            v = Py_NewRef(Py_None);
        }
        else if (field == 2 && wire_type == 1) {
            if (r->end - r->p < 8) {
                malformed();
                goto fail;
            }
            uint64_t bits = 0;
            for (int i = 7; i >= 0; i--)  /* little-endian on the wire, whatever the machine */
                bits = bits << 8 | r->p[i];
            double d;
            memcpy(&d, &bits, 8);
            r->p += 8;
            v = PyFloat_FromDouble(d);
        }
        else if (field == 3 && wire_type == 2) {
            if (sub(r, &body) < 0)
                goto fail;
            v = text(body.p, body.end - body.p);
        }
        else if (field == 4 && wire_type == 0) {
            uint64_t b;
            if (varint(r, &b) < 0)
                goto fail;
            v = PyBool_FromLong(b != 0);
        }
        else if (field == 5 && wire_type == 2) {
            if (sub(r, &body) < 0)
                goto fail;
            v = read_struct(&body, depth + 1, limits);
        }
        else if (field == 6 && wire_type == 2) {
            if (sub(r, &body) < 0)
                goto fail;
            if (depth + 1 > limits->max_depth) {
                too_deep(limits);
                goto fail;
            }
            v = PyList_New(0);
            while (v != NULL && body.p < body.end) {
                uint64_t item_tag;
                Reader item;
                if (varint(&body, &item_tag) < 0) {
                    Py_CLEAR(v);
                    break;
                }
                if (item_tag != (1 << 3 | 2)) {
                    if (skip(&body, item_tag) < 0)
                        Py_CLEAR(v);
                    continue;
                }
                PyObject *x = sub(&body, &item) < 0 ? NULL : read_value(&item, depth + 1, limits);
                if (x == NULL || PyList_Append(v, x) < 0)
                    Py_CLEAR(v);
                Py_XDECREF(x);
            }
        }
        else {
            if (skip(r, tag) < 0)
                goto fail;
            continue;
        }
        if (v == NULL)
            goto fail;
        Py_SETREF(out, v);  /* a oneof: the last kind on the wire wins */
    }
    return out;
fail:
    Py_DECREF(out);
    return NULL;
}

static PyObject *
read_struct(Reader *r, Py_ssize_t depth, Limits *limits)
{
    if (depth > limits->max_depth) {
        too_deep(limits);
        return NULL;
    }
    PyObject *out = PyDict_New();
    if (out == NULL)
        return NULL;
    while (r->p < r->end) {
        uint64_t tag;
        Reader entry;
        if (varint(r, &tag) < 0)
            goto fail;
        if (tag != (1 << 3 | 2)) {
            if (skip(r, tag) < 0)
                goto fail;
            continue;
        }
        if (sub(r, &entry) < 0)
            goto fail;
        /* upb keeps an entry holding any other field as an unknown field of the Struct, out of
         * its map: look before reading, so nothing in such an entry can raise */
        int unknown = 0;
        for (Reader scan = entry; scan.p < scan.end && !unknown;) {
            uint64_t entry_tag;
            if (varint(&scan, &entry_tag) < 0 || skip(&scan, entry_tag) < 0)
                goto fail;
            unknown = entry_tag != (1 << 3 | 2) && entry_tag != (2 << 3 | 2);
        }
        if (unknown)
            continue;
        PyObject *key = NULL, *value = NULL;
        while (entry.p < entry.end) {
            uint64_t entry_tag;
            Reader body;
            if (varint(&entry, &entry_tag) < 0 || sub(&entry, &body) < 0)
                break;
            if (entry_tag == (1 << 3 | 2))
                Py_XSETREF(key, text(body.p, body.end - body.p));
            else
                Py_XSETREF(value, read_value(&body, depth, limits));
            if (PyErr_Occurred())
                break;
        }
        if (PyErr_Occurred()) {
            Py_XDECREF(key);
            Py_XDECREF(value);
            goto fail;
        }
        if (key == NULL)
            key = PyUnicode_FromStringAndSize("", 0);
        int bad = key == NULL || PyDict_SetItem(out, key, value != NULL ? value : Py_None) < 0;
        Py_XDECREF(key);
        Py_XDECREF(value);
        if (bad)
            goto fail;
    }
    return out;
fail:
    Py_DECREF(out);
    return NULL;
}

static PyObject *
decode(PyObject *module, PyObject *args)
{
    (void)module;
    Py_buffer data;
    Limits limits;
    if (!PyArg_ParseTuple(args, "y*nO:decode", &data, &limits.max_depth, &limits.too_deep))
        return NULL;
    Reader r = {(const uint8_t *)data.buf, (const uint8_t *)data.buf + data.len};
    PyObject *out = read_struct(&r, 1, &limits);
    PyBuffer_Release(&data);
    return out;
}

/* ---- fill ------------------------------------------------------------------------------ */

typedef struct {
    char *data;
    Py_ssize_t len, cap;
} Buffer;

static int
reserve(Buffer *b, Py_ssize_t more)
{
    if (b->len + more <= b->cap)
        return 0;
    Py_ssize_t cap = b->cap * 2;
    if (cap < b->len + more)
        cap = b->len + more + 256;
    char *data = PyMem_Realloc(b->data, cap);
    if (data == NULL) {
        PyErr_NoMemory();
        return -1;
    }
    b->data = data;
    b->cap = cap;
    return 0;
}

static int
put(Buffer *b, const void *bytes, Py_ssize_t n)
{
    if (reserve(b, n) < 0)
        return -1;
    memcpy(b->data + b->len, bytes, n);
    b->len += n;
    return 0;
}

static int
put_varint(Buffer *b, uint64_t v)
{
    if (reserve(b, 10) < 0)
        return -1;
    while (v > 0x7F) {
        b->data[b->len++] = (char)((v & 0x7F) | 0x80);
        v >>= 7;
    }
    b->data[b->len++] = (char)v;
    return 0;
}

/* A length-delimited field is written as: tag, MAX_LEN bytes kept for its length, body;
 * then the body moves back to follow the length's actual varint. */
#define MAX_LEN 10

static Py_ssize_t
open_field(Buffer *b, const char *tag, Py_ssize_t tag_len)
{
    if (put(b, tag, tag_len) < 0 || reserve(b, MAX_LEN) < 0)
        return -1;
    b->len += MAX_LEN;
    return b->len;  /* where the body starts */
}

static void
close_field(Buffer *b, Py_ssize_t body)
{
    Py_ssize_t n = b->len - body;
    uint8_t len[MAX_LEN];
    int k = 0;
    uint64_t v = (uint64_t)n;
    while (v > 0x7F) {
        len[k++] = (uint8_t)((v & 0x7F) | 0x80);
        v >>= 7;
    }
    len[k++] = (uint8_t)v;
    char *start = b->data + body - MAX_LEN;
    memcpy(start, len, k);
    memmove(start + k, b->data + body, n);
    b->len = body - MAX_LEN + k + n;
}

static int
put_double(Buffer *b, double d)
{
    uint8_t out[9] = {0x11};  /* Value.number_value: field 2, 64-bit */
    uint64_t bits;
    memcpy(&bits, &d, 8);
    for (int i = 0; i < 8; i++)
        out[1 + i] = (uint8_t)(bits >> (8 * i));
    return put(b, out, 9);
}

static int
put_string(Buffer *b, const char *tag, PyObject *s)
{
    Py_ssize_t n;
    const char *utf8 = PyUnicode_AsUTF8AndSize(s, &n);
    if (utf8 == NULL || put(b, tag, 1) < 0 || put_varint(b, (uint64_t)n) < 0)
        return -1;
    return put(b, utf8, n);
}

static int put_value(Buffer *b, PyObject *v, int depth);

static int
put_struct(Buffer *b, PyObject *dict, int depth)
{
    PyObject *key, *value;
    Py_ssize_t pos = 0;
    while (PyDict_Next(dict, &pos, &key, &value)) {
        if (!PyUnicode_Check(key)) {
            PyErr_SetString(PyExc_TypeError, "a Struct key must be a string");
            return -1;
        }
        Py_ssize_t entry = open_field(b, "\x0a", 1);  /* Struct.fields */
        if (entry < 0 || put_string(b, "\x0a", key) < 0)
            return -1;
        Py_ssize_t body = open_field(b, "\x12", 1);
        if (body < 0 || put_value(b, value, depth + 1) < 0)
            return -1;
        close_field(b, body);
        close_field(b, entry);
    }
    return 0;
}

/* A google.protobuf.Value, as wire._value writes it. */
static int
put_value(Buffer *b, PyObject *v, int depth)
{
    if (depth > 1000) {
        PyErr_SetString(PyExc_RecursionError, "a value nests too deep to encode");
        return -1;
    }
    if (v == Py_None)
        return put(b, "\x08\x00", 2);
    if (v == Py_True)
        return put(b, "\x20\x01", 2);
    if (v == Py_False)
        return put(b, "\x20\x00", 2);
    if (PyUnicode_Check(v))
        return put_string(b, "\x1a", v);
    if (PyFloat_Check(v))
        return put_double(b, PyFloat_AS_DOUBLE(v));
    if (PyLong_Check(v)) {
        double d = PyLong_AsDouble(v);
        if (d == -1.0 && PyErr_Occurred())
            return -1;
        return put_double(b, d);
    }
    if (PyDict_Check(v)) {
        Py_ssize_t body = open_field(b, "\x2a", 1);
        if (body < 0 || put_struct(b, v, depth) < 0)
            return -1;
        close_field(b, body);
        return 0;
    }
    PyObject *items = PySequence_Fast(v, "a Value must be null, a bool, a number, a string, a dict or iterable");
    if (items == NULL)
        return -1;
    Py_ssize_t list = open_field(b, "\x32", 1);
    for (Py_ssize_t i = 0; list >= 0 && i < PySequence_Fast_GET_SIZE(items); i++) {
        Py_ssize_t item = open_field(b, "\x0a", 1);
        if (item < 0 || put_value(b, PySequence_Fast_GET_ITEM(items, i), depth + 1) < 0)
            list = -1;
        else
            close_field(b, item);
    }
    Py_DECREF(items);
    if (list < 0)
        return -1;
    close_field(b, list);
    return 0;
}

typedef struct {
    PyObject *values;  /* a tuple */
    PyObject *shown;   /* Condition.shown */
    Py_ssize_t max_chars;
} Slots;

/* An observed value, as wire._observed writes it. */
static int
put_observed(Buffer *b, PyObject *v, Slots *slots)
{
    if (PyUnicode_CheckExact(v) && PyUnicode_GET_LENGTH(v) <= slots->max_chars)
        return put_string(b, "\x1a", v);
    if (PyFloat_CheckExact(v) || PyLong_CheckExact(v) || PyBool_Check(v))
        return put_value(b, v, 0);
    PyObject *shown = PyObject_CallOneArg(slots->shown, v);
    if (shown == NULL)
        return -1;
    int rc = put_value(b, shown, 0);
    Py_DECREF(shown);
    return rc;
}

static int
put_template(Buffer *b, PyObject *parts, Slots *slots, int depth)
{
    if (!PyTuple_Check(parts) || depth > 100) {
        PyErr_SetString(PyExc_TypeError, "a template is a tuple of parts, a few levels deep");
        return -1;
    }
    for (Py_ssize_t i = 0; i < PyTuple_GET_SIZE(parts); i++) {
        PyObject *p = PyTuple_GET_ITEM(parts, i);
        if (PyBytes_CheckExact(p)) {
            if (put(b, PyBytes_AS_STRING(p), PyBytes_GET_SIZE(p)) < 0)
                return -1;
        }
        else if (PyLong_CheckExact(p)) {
            Py_ssize_t index = PyLong_AsSsize_t(p);
            if (index < 0 || index >= PyTuple_GET_SIZE(slots->values)) {
                if (!PyErr_Occurred())
                    PyErr_SetString(PyExc_IndexError, "a template slot past the values");
                return -1;
            }
            if (put_observed(b, PyTuple_GET_ITEM(slots->values, index), slots) < 0)
                return -1;
        }
        else if (PyTuple_Check(p) && PyTuple_GET_SIZE(p) == 2 && PyBytes_CheckExact(PyTuple_GET_ITEM(p, 0))) {
            PyObject *tag = PyTuple_GET_ITEM(p, 0);
            Py_ssize_t body = open_field(b, PyBytes_AS_STRING(tag), PyBytes_GET_SIZE(tag));
            if (body < 0 || put_template(b, PyTuple_GET_ITEM(p, 1), slots, depth + 1) < 0)
                return -1;
            close_field(b, body);
        }
        else {
            PyErr_SetString(PyExc_TypeError, "a template part is bytes, an int slot or a (tag, parts) field");
            return -1;
        }
    }
    return 0;
}

static PyObject *
fill(PyObject *module, PyObject *const *args, Py_ssize_t nargs)
{
    (void)module;
    if (nargs != 4 || !PyTuple_Check(args[1])) {
        PyErr_SetString(PyExc_TypeError, "fill(template, values: tuple, shown, max_chars)");
        return NULL;
    }
    PyObject *template = args[0];
    if (PyBytes_CheckExact(template))
        return Py_NewRef(template);
    Slots slots = {args[1], args[2], PyLong_AsSsize_t(args[3])};
    if (slots.max_chars == -1 && PyErr_Occurred())
        return NULL;
    Buffer b = {PyMem_Malloc(1024), 0, 1024};
    if (b.data == NULL)
        return PyErr_NoMemory();
    PyObject *out = NULL;
    if (put_template(&b, template, &slots, 0) == 0)
        out = PyBytes_FromStringAndSize(b.data, b.len);
    PyMem_Free(b.data);
    return out;
}

/* ---- decide: a batch's usual items, start to end, in C ----------------------------------- */

/* The service's loop over a batch (server/service.py) does, per item: read the annotations,
 * decide, encode the response from its shape's template, write the decision's log line.
 * `decide` does the same for each item whose every step is the usual one, and stops at the
 * first that is not (bad input, a shape not yet seen, unknown enum values...), which the
 * Python path, the specification, then decides. Tests hold the two to the same bytes. */

typedef struct {
    PyObject *contents, *results, *lines;
    PyObject *evaluate;      /* annotations -> Decision */
    Limits limits;
    Py_ssize_t max_id;       /* a longer content id is the Python path's error */
    PyObject *templates;     /* Decision.shape -> (template, tail) of server.wire.Encoder */
    PyObject *warned;        /* Decision -> its input warnings, encoded (Encoder.input_warnings_field) */
    PyObject *request_id;    /* the EvaluateResponse.request_id field, encoded */
    PyObject *rules;         /* Decision.shape -> the log line's part for it (server.decisionlog) */
    PyObject *line;          /* (head, between, before_ts, end): the log line's fixed parts */
    PyObject *quote;         /* a str as a JSON string, ASCII only */
    Slots slots;
    int framed;              /* each response as an EvaluateBatchResult entry (a batch's, or a whole stream message) */
} Batch;

static double
monotonic(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

static int
put_str(Buffer *b, PyObject *s)
{
    Py_ssize_t n;
    const char *utf8 = PyUnicode_AsUTF8AndSize(s, &n);
    return utf8 == NULL ? -1 : put(b, utf8, n);
}

/* Now, as ISO 8601 UTC to the microsecond (as the Python path writes it): 27 characters and a NUL. */
static void
timestamp(char *out)
{
    static time_t second = -1;
    static char date[24];  /* the second's "YYYY-MM-DDTHH:MM:SS", made once per second */
    struct timespec now;
    clock_gettime(CLOCK_REALTIME, &now);
    if (now.tv_sec != second) {
        struct tm tm;
        gmtime_r(&now.tv_sec, &tm);
        if (strftime(date, sizeof date, "%Y-%m-%dT%H:%M:%S", &tm) != 19)
            memcpy(date, "1970-01-01T00:00:00", 20);
        second = now.tv_sec;
    }
    memcpy(out, date, 19);
    out[19] = '.';
    long us = now.tv_nsec / 1000;
    for (int i = 25; i >= 20; i--, us /= 10)
        out[i] = (char)('0' + us % 10);
    out[26] = 'Z';
    out[27] = '\0';
}

/* The log line: head, content id, rule part, between, latency, before_ts, timestamp, end. */
static PyObject *
log_line(Batch *batch, PyObject *content_id, PyObject *rule_part, double latency)
{
    PyObject *quoted = PyObject_CallOneArg(batch->quote, content_id);
    if (quoted == NULL)
        return NULL;
    char *ms = PyOS_double_to_string(latency * 1000.0, 'f', 3, 0, NULL);
    if (ms == NULL) {
        Py_DECREF(quoted);
        return NULL;
    }
    char stamp[40];
    timestamp(stamp);
    Buffer b = {PyMem_Malloc(512), 0, 512};
    PyObject *out = NULL;
    if (b.data == NULL) {
        PyErr_NoMemory();
    }
    else if (put_str(&b, PyTuple_GET_ITEM(batch->line, 0)) == 0 && put_str(&b, quoted) == 0 && put_str(&b, rule_part) == 0
             && put_str(&b, PyTuple_GET_ITEM(batch->line, 1)) == 0 && put(&b, ms, strlen(ms)) == 0
             && put_str(&b, PyTuple_GET_ITEM(batch->line, 2)) == 0 && put(&b, stamp, strlen(stamp)) == 0
             && put_str(&b, PyTuple_GET_ITEM(batch->line, 3)) == 0) {
        out = PyUnicode_DecodeASCII(b.data, b.len, "strict");
    }
    PyMem_Free(b.data);
    PyMem_Free(ms);
    Py_DECREF(quoted);
    return out;
}

/* One item: 1 decided and appended, 0 left to the Python path, -1 an error of this code. */
static int
decide_one(Batch *batch, PyObject *content, Buffer *b)
{
    static PyObject *s_id, *s_annotations, *s_serialize, *s_input_warnings, *s_shape, *s_values;
    if (s_id == NULL) {
        s_id = PyUnicode_InternFromString("id");
        s_annotations = PyUnicode_InternFromString("annotations");
        s_serialize = PyUnicode_InternFromString("SerializeToString");
        s_input_warnings = PyUnicode_InternFromString("_input_warnings");
        s_shape = PyUnicode_InternFromString("shape");
        s_values = PyUnicode_InternFromString("values");
        if (!s_id || !s_annotations || !s_serialize || !s_input_warnings || !s_shape || !s_values)
            return -1;
    }
    double start = monotonic();
    int rc = 0;
    PyObject *id = NULL, *annotations = NULL, *data = NULL, *values = NULL, *decision = NULL, *shape = NULL, *warnings = NULL;
    PyObject *entry_bytes = NULL, *line = NULL, *warned = NULL, *template = NULL, *rule_part = NULL;
    id = PyObject_GetAttr(content, s_id);
    if (id == NULL)
        goto out;
    if (!PyUnicode_Check(id) || PyUnicode_GET_LENGTH(id) > batch->max_id)
        goto left;
    annotations = PyObject_GetAttr(content, s_annotations);
    data = annotations == NULL ? NULL : PyObject_CallMethodNoArgs(annotations, s_serialize);
    if (data == NULL)
        goto out;
    if (!PyBytes_Check(data))
        goto left;
    Reader r = {(const uint8_t *)PyBytes_AS_STRING(data), (const uint8_t *)PyBytes_AS_STRING(data) + PyBytes_GET_SIZE(data)};
    PyObject *input = read_struct(&r, 1, &batch->limits);
    if (input == NULL)
        goto left;  /* too deep, or bytes this reader does not know: the Python path says which */
    decision = PyObject_CallOneArg(batch->evaluate, input);
    Py_DECREF(input);
    if (decision == NULL)
        goto left;  /* InputError */
    warnings = PyObject_GetAttr(decision, s_input_warnings);
    if (warnings == NULL)
        goto out;
    int named = PyObject_IsTrue(warnings);
    if (named < 0)
        goto out;
    if (named && ((warned = PyObject_CallOneArg(batch->warned, decision)) == NULL || !PyBytes_Check(warned)))
        goto out;
    shape = PyObject_GetAttr(decision, s_shape);
    if (shape == NULL)
        goto out;
    if (shape == Py_None)
        goto done;
    template = Py_XNewRef(PyDict_GetItemWithError(batch->templates, shape));  /* held: filling it may run Python */
    rule_part = template == NULL ? NULL : Py_XNewRef(PyDict_GetItemWithError(batch->rules, shape));
    if (rule_part == NULL || !PyUnicode_Check(rule_part) || !PyTuple_Check(template) || PyTuple_GET_SIZE(template) != 2
        || !PyBytes_Check(PyTuple_GET_ITEM(template, 1))) {
        rc = PyErr_Occurred() ? -1 : 0;
        goto done;  /* a shape not seen yet (the Python path keeps it), or one whose template serves no other */
    }
    values = PyObject_GetAttr(decision, s_values);
    if (values == NULL)
        goto out;
    if (!PyTuple_Check(values))
        goto left;
    batch->slots.values = values;
    /* framed: EvaluateBatchResult in its container's field 1, { response = 1: EvaluateResponse } */
    b->len = 0;
    Py_ssize_t outer = batch->framed ? open_field(b, "\x0a", 1) : 0;
    Py_ssize_t inner = outer < 0 || !batch->framed ? outer : open_field(b, "\x0a", 1);
    if (inner < 0 || put(b, PyBytes_AS_STRING(batch->request_id), PyBytes_GET_SIZE(batch->request_id)) < 0)
        goto out;
    if (PyUnicode_GET_LENGTH(id) > 0 && put_string(b, "\x12", id) < 0)
        goto out;
    PyObject *body = PyTuple_GET_ITEM(template, 0), *tail = PyTuple_GET_ITEM(template, 1);
    if (PyBytes_CheckExact(body) ? put(b, PyBytes_AS_STRING(body), PyBytes_GET_SIZE(body)) : put_template(b, body, &batch->slots, 0))
        goto out;
    if (warned != NULL && put(b, PyBytes_AS_STRING(warned), PyBytes_GET_SIZE(warned)) < 0)
        goto out;
    if (put(b, PyBytes_AS_STRING(tail), PyBytes_GET_SIZE(tail)) < 0)
        goto out;
    if (batch->framed) {
        close_field(b, inner);
        close_field(b, outer);
    }
    entry_bytes = PyBytes_FromStringAndSize(b->data, b->len);
    if (entry_bytes == NULL)
        goto out;
    line = log_line(batch, id, rule_part, monotonic() - start);
    if (line == NULL || PyList_Append(batch->results, entry_bytes) < 0 || PyList_Append(batch->lines, line) < 0)
        goto out;
    rc = 1;
    goto done;
left:
    PyErr_Clear();
    rc = 0;
    goto done;
out:
    rc = -1;
done:
    Py_XDECREF(id);
    Py_XDECREF(annotations);
    Py_XDECREF(data);
    Py_XDECREF(decision);
    Py_XDECREF(warnings);
    Py_XDECREF(shape);
    Py_XDECREF(values);
    Py_XDECREF(entry_bytes);
    Py_XDECREF(line);
    Py_XDECREF(warned);
    Py_XDECREF(template);
    Py_XDECREF(rule_part);
    return rc;
}

static PyObject *
decide(PyObject *module, PyObject *args)
{
    (void)module;
    Batch batch;
    Py_ssize_t start, stop;
    if (!PyArg_ParseTuple(args, "OnnpO!O!OnOnO!OSO!O!OOn:decide", &batch.contents, &start, &stop, &batch.framed, &PyList_Type, &batch.results,
                          &PyList_Type, &batch.lines, &batch.evaluate, &batch.limits.max_depth, &batch.limits.too_deep,
                          &batch.max_id, &PyDict_Type, &batch.templates, &batch.warned, &batch.request_id, &PyDict_Type, &batch.rules,
                          &PyTuple_Type, &batch.line, &batch.quote, &batch.slots.shown, &batch.slots.max_chars))
        return NULL;
    if (PyTuple_GET_SIZE(batch.line) != 4) {
        PyErr_SetString(PyExc_TypeError, "the log line's parts are (head, between, before_ts, end)");
        return NULL;
    }
    for (int i = 0; i < 4; i++)
        if (!PyUnicode_Check(PyTuple_GET_ITEM(batch.line, i))) {
            PyErr_SetString(PyExc_TypeError, "the log line's parts are strings");
            return NULL;
        }
    Buffer b = {PyMem_Malloc(2048), 0, 2048};
    if (b.data == NULL)
        return PyErr_NoMemory();
    Py_ssize_t i = start;
    for (; i < stop; i++) {
        PyObject *content = PySequence_GetItem(batch.contents, i);
        if (content == NULL)
            break;
        int rc = decide_one(&batch, content, &b);
        Py_DECREF(content);
        if (rc <= 0)
            break;
    }
    PyMem_Free(b.data);
    if (PyErr_Occurred())
        return NULL;
    return PyLong_FromSsize_t(i);
}

static PyMethodDef methods[] = {
    {"decode", decode, METH_VARARGS,
     "decode(serialised Struct, max_depth, too_deep) -> dict; raises too_deep(max_depth) past max_depth levels"},
    {"fill", (PyCFunction)(void (*)(void))fill, METH_FASTCALL,
     "fill(template, values, shown, max_chars) -> bytes: a server.wire template with the values in its slots"},
    {"decide", decide, METH_VARARGS,
     "decide(contents, start, stop, framed, results, lines, evaluate, max_depth, too_deep, max_id, templates, warnings_field, request_id_field, "
     "rule_parts, line_parts, quote, shown, max_chars) -> the index of the first item left to Python (stop: none)"},
    {NULL}
};

static struct PyModuleDef struct_module = {
    PyModuleDef_HEAD_INIT,
    .m_name = "server._wire",
    .m_doc = "The protobuf wire format of the Evaluate RPCs' hot path: Structs in, responses out.",
    .m_size = -1,
    .m_methods = methods,
};

PyMODINIT_FUNC
PyInit__wire(void)
{
    return PyModule_Create(&struct_module);
}
