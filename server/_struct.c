/* server._struct: a serialised google.protobuf.Struct to plain Python values, in C.
 *
 * Walking a Struct's message objects from Python cost about 6 us per item of a batch, the
 * largest part of the service's own time. Serialising it again (in upb's C) and reading
 * the bytes here costs a fraction of that. The input is always upb's own serialisation of
 * a message it parsed, so it is well formed; anything else is refused with ValueError,
 * never read past its end. server/convert.py keeps the Python walk as the specification
 * and the fallback; tests hold the two to the same answers.
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
            v = PyUnicode_DecodeUTF8((const char *)body.p, body.end - body.p, NULL);
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
                Py_XSETREF(key, PyUnicode_DecodeUTF8((const char *)body.p, body.end - body.p, NULL));
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

static PyMethodDef methods[] = {
    {"decode", decode, METH_VARARGS,
     "decode(serialised Struct, max_depth, too_deep) -> dict; raises too_deep(max_depth) past max_depth levels"},
    {NULL}
};

static struct PyModuleDef struct_module = {
    PyModuleDef_HEAD_INIT,
    .m_name = "server._struct",
    .m_doc = "A serialised google.protobuf.Struct to plain Python values.",
    .m_size = -1,
    .m_methods = methods,
};

PyMODINIT_FUNC
PyInit__struct(void)
{
    return PyModule_Create(&struct_module);
}
