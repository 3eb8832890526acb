/* engine._native: the per-decision hot path of pol in C.
 *
 * Python builds everything here from the checked, compiled policy (engine/native.py), so
 * this file knows nothing of the language: it runs three small programs.
 *
 *   Validator  annotations -> the field values in schema order. Only the fast path lives
 *              here: when every field is already a valid, final value (or absent with a
 *              default). Anything else (a conversion, an unknown enum value, an error)
 *              goes to the generated Python validator, which is the specification.
 *   Tree       the decision tree: dispatch tables, leaves of rules, and their conditions
 *              in three-valued logic over atoms. Simple atoms (a field compared with a
 *              literal, membership, `has`) run here with Python's own operators; the rest
 *              are generated Python functions called with the field values.
 *   Evaluator  validate, run each policy's tree, settle the verdicts, and make the
 *              Decision, without returning to the interpreter in the common case.
 *
 * Decisions are instances of Python classes (engine/evaluate.py) whose storage is the
 * PolicyDecisionCore and DecisionCore types below, so C makes them without calling
 * __init__ and Python adds the lazily built justifications.
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <structmember.h>
#include <math.h>

/* ==== decision storage ================================================================ */

typedef struct {
    PyObject_HEAD
    PyObject *verdict, *compiled, *values, *matched, *errored, *built;
    Py_ssize_t index;  /* the deciding rule, or -1 for `otherwise`: looked up when read, as it is rarely in cache */
} PolicyDecisionCore;

typedef struct {
    PyObject_HEAD
    PyObject *verdict, *policies, *hash, *input_warnings, *top, *built;
} DecisionCore;

/* Both start with a row of object pointers after the object header, `built` last: one set of
 * functions traverses, clears and frees either. */
#define ROW(self) ((PyObject **)((char *)(self) + sizeof(PyObject)))
#define ROW_LENGTH(type) ((Py_ssize_t)((offsetof(type, built) - sizeof(PyObject)) / sizeof(PyObject *) + 1))

static PyTypeObject PolicyDecisionCoreType;

static Py_ssize_t
row_length(PyObject *self)
{
    return PyObject_TypeCheck(self, &PolicyDecisionCoreType) ? ROW_LENGTH(PolicyDecisionCore) : ROW_LENGTH(DecisionCore);
}

static int
row_traverse(PyObject *self, visitproc visit, void *arg)
{
    for (Py_ssize_t i = 0, n = row_length(self); i < n; i++)
        Py_VISIT(ROW(self)[i]);
    return 0;
}

static int
row_clear(PyObject *self)
{
    for (Py_ssize_t i = 0, n = row_length(self); i < n; i++)
        Py_CLEAR(ROW(self)[i]);
    return 0;
}

static void
row_dealloc(PyObject *self)
{
    PyObject_GC_UnTrack(self);
    row_clear(self);
    Py_TYPE(self)->tp_free(self);
}

#define PDC(name, field) {name, T_OBJECT, offsetof(PolicyDecisionCore, field), 0, NULL}
static PyMemberDef pdc_members[] = {
    PDC("verdict", verdict), PDC("_compiled", compiled), PDC("_values", values),
    PDC("_matched", matched), PDC("_errored", errored), {"_index", T_PYSSIZET, offsetof(PolicyDecisionCore, index), 0, NULL},
    PDC("_built", built), {NULL}
};

static PyTypeObject PolicyDecisionCoreType = {
    PyVarObject_HEAD_INIT(NULL, 0)
    .tp_name = "engine._native.PolicyDecisionCore",
    .tp_doc = "Storage of one policy's decision (see engine.evaluate.PolicyDecision).",
    .tp_basicsize = sizeof(PolicyDecisionCore),
    .tp_flags = Py_TPFLAGS_DEFAULT | Py_TPFLAGS_BASETYPE | Py_TPFLAGS_HAVE_GC,
    .tp_new = PyType_GenericNew,
    .tp_dealloc = row_dealloc,
    .tp_traverse = row_traverse,
    .tp_clear = row_clear,
    .tp_members = pdc_members,
};

#define DC(name, field) {name, T_OBJECT, offsetof(DecisionCore, field), 0, NULL}
static PyMemberDef dc_members[] = {
    DC("verdict", verdict), DC("policies", policies), DC("policy_set_hash", hash),
    DC("_input_warnings", input_warnings), DC("_top", top), DC("_built", built), {NULL}
};

/* What a decision's justification depends on beside its values and unknown enum values:
 * ((policy name, deciding rule index, matched, errored), ...) per policy; None when its
 * policies read different schemas (so different values). */
static PyObject *
dc_shape(DecisionCore *self, void *closure)
{
    static PyObject *name_str = NULL;
    if (name_str == NULL && (name_str = PyUnicode_InternFromString("name")) == NULL)
        return NULL;
    if (!PyTuple_Check(self->policies)) {
        PyErr_SetString(PyExc_TypeError, "Decision.policies must be a tuple");
        return NULL;
    }
    Py_ssize_t n = PyTuple_GET_SIZE(self->policies);
    PyObject *shape = PyTuple_New(n);
    if (shape == NULL)
        return NULL;
    PyObject *values = NULL;
    for (Py_ssize_t i = 0; i < n; i++) {
        PyObject *item = PyTuple_GET_ITEM(self->policies, i);
        if (!PyObject_TypeCheck(item, &PolicyDecisionCoreType)) {
            PyErr_SetString(PyExc_TypeError, "Decision.policies must hold PolicyDecisions");
            goto fail;
        }
        PolicyDecisionCore *pd = (PolicyDecisionCore *)item;
        if (i == 0)
            values = pd->values;
        else if (pd->values != values) {
            Py_DECREF(shape);
            Py_RETURN_NONE;
        }
        PyObject *name = PyObject_GetAttr(pd->compiled, name_str);
        PyObject *index = name == NULL ? NULL : PyLong_FromSsize_t(pd->index);
        PyObject *entry = index == NULL ? NULL : PyTuple_Pack(4, name, index, pd->matched ? pd->matched : Py_None, pd->errored ? pd->errored : Py_None);
        Py_XDECREF(name);
        Py_XDECREF(index);
        if (entry == NULL)
            goto fail;
        PyTuple_SET_ITEM(shape, i, entry);
    }
    return shape;
fail:
    Py_DECREF(shape);
    return NULL;
}

static PyObject *
dc_values(DecisionCore *self, void *closure)
{
    if (PyTuple_Check(self->policies) && PyTuple_GET_SIZE(self->policies) > 0) {
        PyObject *pd = PyTuple_GET_ITEM(self->policies, 0);
        if (PyObject_TypeCheck(pd, &PolicyDecisionCoreType) && ((PolicyDecisionCore *)pd)->values != NULL)
            return Py_NewRef(((PolicyDecisionCore *)pd)->values);
    }
    return PyTuple_New(0);
}

static PyGetSetDef dc_getset[] = {
    {"shape", (getter)dc_shape, NULL,
     "All a decision's justification depends on beside `values` and `input_warnings`: decisions of one set with "
     "equal shapes differ only in the values their conditions observed and the unknown enum values they name. "
     "None when its policies read different schemas.", NULL},
    {"values", (getter)dc_values, NULL, "The validated input its (first) policy decided on, indexed by `FieldRef.index`.", NULL},
    {NULL}
};

static PyTypeObject DecisionCoreType = {
    PyVarObject_HEAD_INIT(NULL, 0)
    .tp_name = "engine._native.DecisionCore",
    .tp_doc = "Storage of a decision (see engine.evaluate.Decision).",
    .tp_basicsize = sizeof(DecisionCore),
    .tp_flags = Py_TPFLAGS_DEFAULT | Py_TPFLAGS_BASETYPE | Py_TPFLAGS_HAVE_GC,
    .tp_new = PyType_GenericNew,
    .tp_dealloc = row_dealloc,
    .tp_traverse = row_traverse,
    .tp_clear = row_clear,
    .tp_members = dc_members,
    .tp_getset = dc_getset,
};

/* ==== validator ======================================================================= */

enum { K_STRING, K_ENUM, K_INT, K_FLOAT, K_BOOL, K_STRINGS_LIST, K_STRINGS_SET, K_OTHER };

/* An enum's values, by their Python hash, each with its place in the declaration (the
 * ordinal dispatch nodes index by) and, when short, its text: with thousands of values,
 * a lookup reads one entry and neither the value's string nor a dict's index. */
#define INLINE_TEXT 8
typedef struct {
    Py_hash_t hash;
    PyObject *key;      /* borrowed from the spec; NULL: empty */
    int32_t ordinal;
    int32_t length;     /* of `text`, when the value is 1-byte text of at most INLINE_TEXT; else -1 */
    char text[INLINE_TEXT];
} EnumEntry;

typedef struct {
    Py_ssize_t depth;
    PyObject **path;   /* borrowed from the spec */
    int kind;
    PyObject *values;  /* K_ENUM: the declared values, a tuple; lists of enums: a frozenset; else NULL */
    EnumEntry *enums;  /* K_ENUM: the values' table */
    size_t mask;       /* its size - 1 */
    PyObject *dflt;    /* the default, or NULL */
    int optional;
    PyObject *dotted;  /* the field's name, for warnings */
} FieldSpec;

#define MAX_ECHO 256  /* characters of a caller's value a warning repeats (engine/validate.py) */

typedef struct {
    PyObject_HEAD
    Py_ssize_t n;
    FieldSpec *fields;
    PyObject *spec;      /* owns every object the field specs borrow */
    PyObject *fallback;  /* the generated Python validator: the slow path and the specification */
    PyObject *weakreflist;
} Validator;

/* Whether `s` is valid Unicode text: no lone surrogates (json.loads makes them). */
static int
valid_text(PyObject *s)
{
    int kind = PyUnicode_KIND(s);
    if (kind == PyUnicode_1BYTE_KIND)
        return 1;
    const void *data = PyUnicode_DATA(s);
    Py_ssize_t n = PyUnicode_GET_LENGTH(s);
    for (Py_ssize_t i = 0; i < n; i++) {
        Py_UCS4 c = PyUnicode_READ(kind, data, i);
        if (c >= 0xD800 && c <= 0xDFFF)
            return 0;
    }
    return 1;
}

static int
enum_table(FieldSpec *f)
{
    Py_ssize_t n = PyTuple_GET_SIZE(f->values);
    if (n > INT32_MAX / 4) {
        PyErr_SetString(PyExc_ValueError, "too many enum values");
        return -1;
    }
    size_t size = 8;
    while (size < 2 * (size_t)n)
        size *= 2;
    f->mask = size - 1;
    f->enums = PyMem_Calloc(size, sizeof(EnumEntry));
    if (f->enums == NULL) {
        PyErr_NoMemory();
        return -1;
    }
    for (Py_ssize_t i = 0; i < n; i++) {
        PyObject *key = PyTuple_GET_ITEM(f->values, i);
        if (!PyUnicode_CheckExact(key)) {
            PyErr_SetString(PyExc_ValueError, "enum values must be strings");
            return -1;
        }
        Py_hash_t hash = PyObject_Hash(key);
        if (hash == -1)
            return -1;
        size_t j = (size_t)hash & f->mask;
        for (; f->enums[j].key != NULL; j = (j + 1) & f->mask)
            if (PyUnicode_Compare(f->enums[j].key, key) == 0) {
                PyErr_SetString(PyExc_ValueError, "enum values must be distinct");
                return -1;
            }
        EnumEntry *e = &f->enums[j];
        *e = (EnumEntry){hash, key, (int32_t)i, -1, {0}};
        if (PyUnicode_KIND(key) == PyUnicode_1BYTE_KIND && PyUnicode_GET_LENGTH(key) <= INLINE_TEXT) {
            e->length = (int32_t)PyUnicode_GET_LENGTH(key);
            memcpy(e->text, PyUnicode_DATA(key), (size_t)e->length);
        }
    }
    return 0;
}

/* The ordinal of the declared value `v` (an exact str) of an enum field, or -1. */
static int32_t
enum_ordinal(FieldSpec *f, PyObject *v)
{
    Py_hash_t hash = PyObject_Hash(v);
    if (hash == -1) {
        PyErr_Clear();
        return -1;
    }
    Py_ssize_t length = PyUnicode_GET_LENGTH(v);
    int short_text = PyUnicode_KIND(v) == PyUnicode_1BYTE_KIND && length <= INLINE_TEXT;
    for (size_t j = (size_t)hash & f->mask;; j = (j + 1) & f->mask) {
        EnumEntry *e = &f->enums[j];
        if (e->key == NULL)
            return -1;
        if (e->key == v)
            return e->ordinal;
        if (e->hash != hash)
            continue;
        if (e->length >= 0 || short_text) {  /* short 1-byte text on either side: the inline text decides */
            if (short_text && e->length == length && memcmp(e->text, PyUnicode_DATA(v), (size_t)length) == 0)
                return e->ordinal;
        }
        else if (PyUnicode_Compare(e->key, v) == 0)
            return e->ordinal;
    }
}

/* The object holding the last field looked up, and its path: a schema's fields of one
 * object are consecutive, so each but the first finds it here. */
typedef struct {
    PyObject *obj;        /* borrowed; NULL: none */
    PyObject **path;
    Py_ssize_t depth;     /* of the holder: the field's depth - 1 */
} Holder;

/* The field's raw value (borrowed), NULL when absent. Sets *slow when an object on the
 * way is not an object; returns NULL with an exception set only on a real error. */
static PyObject *
field_lookup(PyObject *a, FieldSpec *f, int *slow, Holder *holder)
{
    PyObject *obj = a;
    Py_ssize_t start = 0;
    if (f->depth > 1 && holder->obj != NULL && holder->depth == f->depth - 1) {
        start = f->depth - 1;
        for (Py_ssize_t i = 0; i < start; i++)
            if (holder->path[i] != f->path[i]) {
                start = 0;
                break;
            }
        if (start)
            obj = holder->obj;
    }
    for (Py_ssize_t i = start; i < f->depth; i++) {
        if (i == f->depth - 1 && i > 0) {
            holder->obj = obj;
            holder->path = f->path;
            holder->depth = i;
        }
        obj = PyDict_GetItemWithError(obj, f->path[i]);
        if (obj == NULL || obj == Py_None)
            return NULL;
        if (i + 1 < f->depth && !PyDict_CheckExact(obj)) {
            *slow = 1;
            return NULL;
        }
    }
    return obj;
}

/* The strings of a list, converted as the schema says; NULL without an exception: slow path. */
static PyObject *
strings(PyObject *list, FieldSpec *f)
{
    Py_ssize_t n = PyList_GET_SIZE(list);
    for (Py_ssize_t i = 0; i < n; i++) {
        PyObject *item = PyList_GET_ITEM(list, i);
        if (!PyUnicode_CheckExact(item) || !valid_text(item))
            return NULL;
        if (f->values != NULL) {
            int in = PySet_Contains(f->values, item);
            if (in <= 0)
                return NULL;  /* an unknown value (a warning) or an error: the slow path says */
        }
    }
    if (n == 0 && f->kind == K_STRINGS_SET) {  /* immutable: one empty set serves every input */
        static PyObject *empty = NULL;
        if (empty == NULL && (empty = PyFrozenSet_New(NULL)) == NULL)
            return NULL;
        return Py_NewRef(empty);
    }
    return f->kind == K_STRINGS_SET ? PyFrozenSet_New(list) : PyList_AsTuple(list);
}

/* The value of one field (new reference); NULL without an exception: slow path. An enum
 * value the schema does not declare is kept, with a (field, value) warning in *warns. */
static PyObject *
field_value(PyObject *a, FieldSpec *f, PyObject **warns, Holder *holder, int32_t *ordinal)
{
    int slow = 0;
    PyObject *v = field_lookup(a, f, &slow, holder);
    if (v == NULL) {
        if (slow || PyErr_Occurred())
            return NULL;
        if (f->dflt != NULL)
            return Py_NewRef(f->dflt);
        return f->optional ? Py_NewRef(Py_None) : NULL;
    }
    switch (f->kind) {
    case K_STRING:
        return PyUnicode_CheckExact(v) && valid_text(v) ? Py_NewRef(v) : NULL;
    case K_ENUM: {
        if (!PyUnicode_CheckExact(v))
            return NULL;
        *ordinal = enum_ordinal(f, v);
        if (*ordinal >= 0)
            return Py_NewRef(v);
        if (PyUnicode_GET_LENGTH(v) > MAX_ECHO || !valid_text(v))
            return NULL;  /* the slow path cuts long values short, and rejects broken text */
        if (*warns == NULL && (*warns = PyList_New(0)) == NULL)
            return NULL;
        PyObject *w = PyTuple_Pack(2, f->dotted, v);
        if (w == NULL || PyList_Append(*warns, w) < 0) {
            Py_XDECREF(w);
            return NULL;
        }
        Py_DECREF(w);
        return Py_NewRef(v);
    }
    case K_INT:
        if (PyLong_CheckExact(v)) {
            int overflow;
            PyLong_AsLongLongAndOverflow(v, &overflow);
            if (!overflow)
                return Py_NewRef(v);
        }
        else if (PyFloat_CheckExact(v)) {  /* JSON and protobuf's Struct carry every number as a double */
            double d = PyFloat_AS_DOUBLE(v);
            if (isfinite(d) && d == floor(d) && d >= -9223372036854775808.0 && d < 9223372036854775808.0)
                return PyLong_FromDouble(d);
        }
        return NULL;
    case K_FLOAT:
        if (PyFloat_CheckExact(v))
            return isfinite(PyFloat_AS_DOUBLE(v)) ? Py_NewRef(v) : NULL;
        if (PyLong_CheckExact(v)) {
            double d = PyLong_AsDouble(v);
            if (d == -1.0 && PyErr_Occurred()) {
                PyErr_Clear();
                return NULL;
            }
            return PyFloat_FromDouble(d);
        }
        return NULL;
    case K_BOOL:
        return PyBool_Check(v) ? Py_NewRef(v) : NULL;
    case K_STRINGS_LIST:
    case K_STRINGS_SET:
        if (PyList_CheckExact(v)) {
            PyObject *out = strings(v, f);
            if (out == NULL)
                PyErr_Clear();
            return out;
        }
        return NULL;
    default:
        return NULL;
    }
}

/* The values tuple (and in *warns, a list of unknown enum values or NULL), or NULL: with an
 * exception set on error, without one for the slow path. `ordinals`, when not NULL, gets each
 * field's enum ordinal, -1 for any other field or value. */
static PyObject *
validate_fast(Validator *self, PyObject *a, PyObject **warns, int32_t *ordinals)
{
    *warns = NULL;
    if (!PyDict_CheckExact(a))
        return NULL;
    PyObject *values = PyTuple_New(self->n);
    if (values == NULL)
        return NULL;
    Holder holder = {NULL, NULL, 0};
    for (Py_ssize_t i = 0; i < self->n; i++) {
        int32_t ordinal = -1;
        PyObject *v = field_value(a, &self->fields[i], warns, &holder, &ordinal);
        if (ordinals != NULL)
            ordinals[i] = ordinal;
        if (v == NULL) {
            Py_DECREF(values);
            Py_CLEAR(*warns);
            if (PyErr_Occurred() && !PyErr_ExceptionMatches(PyExc_MemoryError))
                PyErr_Clear();  /* e.g. an unhashable key compared in a lookup: let Python judge */
            return NULL;
        }
        PyTuple_SET_ITEM(values, i, v);
    }
    return values;
}

/* (values, warnings or None), exactly as the generated validator returns them. */
static PyObject *
validate(Validator *self, PyObject *a)
{
    PyObject *warns;
    PyObject *values = validate_fast(self, a, &warns, NULL);
    if (values != NULL) {
        PyObject *out = PyTuple_Pack(2, values, warns != NULL ? warns : Py_None);
        Py_DECREF(values);
        Py_XDECREF(warns);
        return out;
    }
    if (PyErr_Occurred())
        return NULL;
    PyObject *out = PyObject_CallOneArg(self->fallback, a);
    if (out != NULL && (!PyTuple_CheckExact(out) || PyTuple_GET_SIZE(out) != 2 || !PyTuple_CheckExact(PyTuple_GET_ITEM(out, 0)))) {
        Py_DECREF(out);
        PyErr_SetString(PyExc_TypeError, "the validator must return (values, warnings)");
        return NULL;
    }
    return out;
}

static void
validator_dealloc(Validator *self)
{
    if (self->weakreflist != NULL)
        PyObject_ClearWeakRefs((PyObject *)self);
    for (Py_ssize_t i = 0; self->fields != NULL && i < self->n; i++)
        PyMem_Free(self->fields[i].enums);
    PyMem_Free(self->fields);
    Py_XDECREF(self->spec);
    Py_XDECREF(self->fallback);
    Py_TYPE(self)->tp_free((PyObject *)self);
}

static PyObject *
validator_new(PyTypeObject *type, PyObject *args, PyObject *kwds)
{
    PyObject *spec, *fallback;
    static char *kwlist[] = {"fields", "fallback", NULL};
    if (!PyArg_ParseTupleAndKeywords(args, kwds, "O!O:Validator", kwlist, &PyTuple_Type, &spec, &fallback))
        return NULL;
    Validator *self = (Validator *)type->tp_alloc(type, 0);
    if (self == NULL)
        return NULL;
    self->spec = Py_NewRef(spec);
    self->fallback = Py_NewRef(fallback);
    self->n = PyTuple_GET_SIZE(spec);
    self->fields = PyMem_Calloc(self->n ? self->n : 1, sizeof(FieldSpec));
    if (self->fields == NULL) {
        Py_DECREF(self);
        return PyErr_NoMemory();
    }
    for (Py_ssize_t i = 0; i < self->n; i++) {
        /* (path: tuple[str, ...], kind: int, values: frozenset | None, has_default: bool, default, optional: bool, dotted: str) */
        PyObject *path, *values, *dflt, *dotted;
        int kind, has_default, optional;
        if (!PyArg_ParseTuple(PyTuple_GET_ITEM(spec, i), "O!iOpOpU", &PyTuple_Type, &path, &kind, &values, &has_default, &dflt,
                              &optional, &dotted)) {
            Py_DECREF(self);
            return NULL;
        }
        FieldSpec *f = &self->fields[i];
        f->depth = PyTuple_GET_SIZE(path);
        f->path = &PyTuple_GET_ITEM(path, 0);
        f->kind = kind;
        f->values = values == Py_None ? NULL : values;
        f->dflt = has_default ? dflt : NULL;
        f->optional = optional;
        f->dotted = dotted;
        if (f->depth == 0 || kind < K_STRING || kind > K_OTHER || (kind == K_ENUM && (f->values == NULL || !PyTuple_CheckExact(f->values)))
            || (kind != K_ENUM && f->values != NULL && !PyFrozenSet_CheckExact(f->values))
            || (kind == K_ENUM && enum_table(f) < 0)) {
            Py_DECREF(self);
            if (!PyErr_Occurred() || PyErr_ExceptionMatches(PyExc_ValueError)) {
                PyErr_Clear();
                PyErr_Format(PyExc_ValueError, "bad field spec at %zd", i);
            }
            return NULL;
        }
    }
    return (PyObject *)self;
}

static PyObject *
validator_call(Validator *self, PyObject *args, PyObject *kwds)
{
    PyObject *a;
    if (!PyArg_ParseTuple(args, "O:Validator", &a))
        return NULL;
    return validate(self, a);
}

static PyTypeObject ValidatorType = {
    PyVarObject_HEAD_INIT(NULL, 0)
    .tp_name = "engine._native.Validator",
    .tp_doc = "Validator(fields, fallback)(annotations) -> (values, warnings or None)",
    .tp_basicsize = sizeof(Validator),
    .tp_flags = Py_TPFLAGS_DEFAULT,
    .tp_new = validator_new,
    .tp_dealloc = (destructor)validator_dealloc,
    .tp_call = (ternaryfunc)validator_call,
    .tp_weaklistoffset = offsetof(Validator, weakreflist),
};

/* ==== tree ============================================================================ */

enum { A_COMPARE, A_TRUTH, A_IN, A_NOT_IN, A_PRESENT, A_CALL };
enum { C_AND, C_OR, C_NOT, C_ATOM };
enum { N_LEAF, N_DISPATCH, N_SEQ };
/* Truth values: 0 false, 1 true, 2 error (a division by zero); -1 is a raised exception. */
enum { FALSE3 = 0, TRUE3 = 1, ERROR3 = 2 };

typedef struct {
    int kind, op;
    Py_ssize_t left, right;    /* field indices, or -1 for the constants */
    PyObject *lconst, *rconst; /* borrowed */
    Py_ssize_t nguards, *guards;  /* optional fields read: absent makes the atom false */
    PyObject *fn;              /* A_CALL: the generated function of the field values */
    PyObject *id;              /* the atom's id, for the tick */
    Py_ssize_t slot;           /* memo slot, or -1 when used once */
} AtomSpec;

typedef struct Cond {
    int kind;
    Py_ssize_t n, atom;
    struct Cond *kids;
} Cond;

typedef struct {
    Py_ssize_t rule;
    int has_cond;    /* 0: nothing left to check */
    int rank;        /* the rule's rank (RuleData): carried with a match, so settling reads no rule's data */
    Cond cond;
} Check;

/* A dispatch table entry: open addressing over the values' Python hashes. A lookup matches
 * as a dict's does (the same object, or an equal hash and ==), so 1, 1.0 and true collide
 * as they would in Python; it only saves the dict's separate index and int objects. */
typedef struct {
    PyObject *key;  /* borrowed from the spec's dict; NULL: empty */
    Py_hash_t hash;
    Py_ssize_t kid;
} Entry;

typedef struct {
    PyObject *verdict;  /* borrowed from the spec */
    int rank;           /* the verdict's severity; -1 for a shadow rule, which never decides */
    int severity;       /* the verdict's severity, shadow or not */
} RuleData;

/* One cache line: with thousands of rules, the branch a dispatch takes is rarely in cache, and
 * a leaf's kind, count and single check are all a decision reads of it. */
typedef struct Node {
    int32_t kind;
    int32_t n;                  /* N_LEAF: checks; N_DISPATCH and N_SEQ: children */
    union {
        struct {
            Check *checks;      /* `one` when there is a single check (the usual leaf) */
            Check one;
        } leaf;
        struct {
            struct Node *kids;  /* N_DISPATCH branches, N_SEQ children: NODE_ALIGN-aligned */
            Py_ssize_t field;   /* N_DISPATCH: the field looked up */
            int32_t *by_ordinal;  /* N_DISPATCH on an enum field: the branch of each declared value, or -1; else NULL */
            Py_ssize_t nordinals;
            size_t mask;        /* N_DISPATCH: entries - 1, a power of two minus one */
            Entry *entries;
        } branch;
    };
} Node;

#define NODE_ALIGN 64

typedef struct {
    PyObject_HEAD
    PyObject *spec;       /* owns every object the structures below borrow */
    Py_ssize_t natoms, nslots, nrules, nfields;
    AtomSpec *atoms;
    Node root;
    RuleData *rules;      /* per rule, while building: then freed (a match carries its rank; a severity names its verdict) */
    PyObject *otherwise_verdict;
    int otherwise_severity;
    PyObject *verdict_of[3];  /* borrowed: the verdict of each severity (a rank is a severity), NULL if no rule has it */
    int first_match;
    PyObject *tick;       /* NULL, or tick(atom_id, value) -> value: counts evaluations in tests */
    PyTypeObject *pd_type;
    PyObject *weakreflist;
} Tree;

static void
cond_free(Cond *c)
{
    if (c->kids != NULL) {
        for (Py_ssize_t i = 0; i < c->n; i++)
            cond_free(&c->kids[i]);
        PyMem_Free(c->kids);
    }
}

static void
node_free(Node *node)
{
    if (node->kind == N_LEAF) {
        if (node->leaf.checks != NULL) {
            for (Py_ssize_t i = 0; i < node->n; i++)
                cond_free(&node->leaf.checks[i].cond);
            if (node->leaf.checks != &node->leaf.one)
                PyMem_Free(node->leaf.checks);
        }
        return;
    }
    if (node->kind != N_DISPATCH && node->kind != N_SEQ)
        return;  /* a kind the spec got wrong: nothing was made */
    PyMem_Free(node->branch.entries);
    PyMem_Free(node->branch.by_ordinal);
    if (node->branch.kids != NULL) {
        for (Py_ssize_t i = 0; i < node->n; i++)
            node_free(&node->branch.kids[i]);
        free(node->branch.kids);
    }
}

_Static_assert(sizeof(Node) <= NODE_ALIGN, "a node fits a cache line");

/* `n` nodes, zeroed, each on a cache line of its own. */
static Node *
nodes_new(Py_ssize_t n)
{
    size_t size = (size_t)(n ? n : 1) * NODE_ALIGN;
    Node *out = aligned_alloc(NODE_ALIGN, size);
    if (out != NULL)
        memset(out, 0, size);
    return out;
}

/* ---- building from the spec Python made (engine/native.py) ---- */

static int
bad_spec(const char *what)
{
    if (!PyErr_Occurred())
        PyErr_Format(PyExc_ValueError, "bad tree spec: %s", what);
    return -1;
}

static int
field_index(Tree *t, PyObject *o, Py_ssize_t *out)
{
    Py_ssize_t i = PyLong_AsSsize_t(o);
    if (i == -1 && PyErr_Occurred())
        return -1;
    if (i < -1 || i >= t->nfields)
        return bad_spec("field index out of range");
    *out = i;
    return 0;
}

static int
build_cond(Tree *t, PyObject *spec, Cond *c)
{
    /* (C_AND | C_OR, (cond, ...)) | (C_NOT, cond) | (C_ATOM, atom position) */
    if (!PyTuple_CheckExact(spec) || PyTuple_GET_SIZE(spec) != 2)
        return bad_spec("condition");
    int kind = (int)PyLong_AsLong(PyTuple_GET_ITEM(spec, 0));
    PyObject *arg = PyTuple_GET_ITEM(spec, 1);
    c->kind = kind;
    if (kind == C_ATOM) {
        c->atom = PyLong_AsSsize_t(arg);
        if (c->atom < 0 || c->atom >= t->natoms)
            return bad_spec("atom position");
        return 0;
    }
    if (kind == C_NOT) {
        c->n = 1;
        c->kids = PyMem_Calloc(1, sizeof(Cond));
        if (c->kids == NULL) {
            PyErr_NoMemory();
            return -1;
        }
        return build_cond(t, arg, c->kids);
    }
    if ((kind != C_AND && kind != C_OR) || !PyTuple_CheckExact(arg) || PyTuple_GET_SIZE(arg) == 0)
        return bad_spec("condition kind");
    c->n = PyTuple_GET_SIZE(arg);
    c->kids = PyMem_Calloc(c->n, sizeof(Cond));
    if (c->kids == NULL) {
        PyErr_NoMemory();
        return -1;
    }
    for (Py_ssize_t i = 0; i < c->n; i++)
        if (build_cond(t, PyTuple_GET_ITEM(arg, i), &c->kids[i]) < 0)
            return -1;
    return 0;
}

static int
build_node(Tree *t, PyObject *spec, Node *node)
{
    /* (N_LEAF, ((rule, cond | None), ...)) | (N_DISPATCH, field, {value: kid}, (node, ...), (kid | -1 by enum ordinal, ...) | None)
     * | (N_SEQ, (node, ...)) */
    if (!PyTuple_CheckExact(spec) || PyTuple_GET_SIZE(spec) < 2)
        return bad_spec("node");
    node->kind = (int)PyLong_AsLong(PyTuple_GET_ITEM(spec, 0));
    PyObject *kids;
    if (node->kind == N_LEAF) {
        PyObject *checks = PyTuple_GET_ITEM(spec, 1);
        if (!PyTuple_CheckExact(checks))
            return bad_spec("leaf");
        if (PyTuple_GET_SIZE(checks) > INT32_MAX)
            return bad_spec("leaf size");
        node->n = (int32_t)PyTuple_GET_SIZE(checks);
        node->leaf.checks = node->n == 1 ? &node->leaf.one : PyMem_Calloc(node->n ? node->n : 1, sizeof(Check));
        if (node->leaf.checks == NULL) {
            PyErr_NoMemory();
            return -1;
        }
        for (Py_ssize_t i = 0; i < node->n; i++) {
            PyObject *check = PyTuple_GET_ITEM(checks, i);
            if (!PyTuple_CheckExact(check) || PyTuple_GET_SIZE(check) != 2 || !PyLong_CheckExact(PyTuple_GET_ITEM(check, 0)))
                return bad_spec("check");
            PyObject *rule = PyTuple_GET_ITEM(check, 0);
            Py_ssize_t r = PyLong_AsSsize_t(rule);
            if (r < 0 || r >= t->nrules)
                return bad_spec("rule index");
            node->leaf.checks[i].rule = r;
            node->leaf.checks[i].rank = t->rules[r].rank;
            PyObject *cond = PyTuple_GET_ITEM(check, 1);
            if (cond != Py_None) {
                node->leaf.checks[i].has_cond = 1;
                if (build_cond(t, cond, &node->leaf.checks[i].cond) < 0)
                    return -1;
            }
        }
        return 0;
    }
    if (node->kind == N_DISPATCH) {
        if (PyTuple_GET_SIZE(spec) != 5 || !PyDict_CheckExact(PyTuple_GET_ITEM(spec, 2)))
            return bad_spec("dispatch");
        if (field_index(t, PyTuple_GET_ITEM(spec, 1), &node->branch.field) < 0 || node->branch.field < 0)
            return bad_spec("dispatch field");
        kids = PyTuple_GET_ITEM(spec, 3);
    }
    else if (node->kind == N_SEQ) {
        kids = PyTuple_GET_ITEM(spec, 1);
    }
    else
        return bad_spec("node kind");
    if (!PyTuple_CheckExact(kids))
        return bad_spec("node children");
    if (PyTuple_GET_SIZE(kids) > INT32_MAX)
        return bad_spec("node size");
    node->n = (int32_t)PyTuple_GET_SIZE(kids);
    node->branch.kids = nodes_new(node->n);
    if (node->branch.kids == NULL) {
        PyErr_NoMemory();
        return -1;
    }
    for (Py_ssize_t i = 0; i < node->n; i++)
        if (build_node(t, PyTuple_GET_ITEM(kids, i), &node->branch.kids[i]) < 0)
            return -1;
    if (node->kind == N_DISPATCH) {
        PyObject *table = PyTuple_GET_ITEM(spec, 2), *key, *value;
        size_t size = 8;
        while (size < 2 * (size_t)PyDict_GET_SIZE(table))
            size *= 2;
        node->branch.mask = size - 1;
        node->branch.entries = PyMem_Calloc(size, sizeof(Entry));
        if (node->branch.entries == NULL) {
            PyErr_NoMemory();
            return -1;
        }
        Py_ssize_t pos = 0;
        while (PyDict_Next(table, &pos, &key, &value)) {
            Py_ssize_t kid = PyLong_Check(value) ? PyLong_AsSsize_t(value) : -1;
            if (kid < 0 || kid >= node->n)  /* every entry must name a child */
                return bad_spec("dispatch entry");
            Py_hash_t hash = PyObject_Hash(key);
            if (hash == -1)
                return -1;
            size_t i = (size_t)hash & node->branch.mask;
            while (node->branch.entries[i].key != NULL)  /* a dict's keys are distinct: no duplicate to find */
                i = (i + 1) & node->branch.mask;
            node->branch.entries[i] = (Entry){key, hash, kid};
        }
        PyObject *by_ordinal = PyTuple_GET_ITEM(spec, 4);
        if (by_ordinal != Py_None) {
            if (!PyTuple_CheckExact(by_ordinal))
                return bad_spec("dispatch ordinals");
            node->branch.nordinals = PyTuple_GET_SIZE(by_ordinal);
            node->branch.by_ordinal = PyMem_Calloc(node->branch.nordinals ? node->branch.nordinals : 1, sizeof(int32_t));
            if (node->branch.by_ordinal == NULL) {
                PyErr_NoMemory();
                return -1;
            }
            for (Py_ssize_t i = 0; i < node->branch.nordinals; i++) {
                PyObject *kid = PyTuple_GET_ITEM(by_ordinal, i);
                Py_ssize_t k = PyLong_Check(kid) ? PyLong_AsSsize_t(kid) : -2;
                if (k < -1 || k >= node->n)
                    return bad_spec("dispatch ordinal");
                node->branch.by_ordinal[i] = (int32_t)k;
            }
        }
    }
    return 0;
}

static int
build_atom(Tree *t, PyObject *spec, AtomSpec *a)
{
    /* (kind, op, left, lconst, right, rconst, guards, fn, id, slot) */
    PyObject *guards, *left, *right;
    if (!PyArg_ParseTuple(spec, "iiOOOOO!OOn", &a->kind, &a->op, &left, &a->lconst, &right, &a->rconst,
                          &PyTuple_Type, &guards, &a->fn, &a->id, &a->slot))
        return -1;
    if (field_index(t, left, &a->left) < 0 || field_index(t, right, &a->right) < 0)
        return -1;
    if (a->kind < A_COMPARE || a->kind > A_CALL || a->op < Py_LT || a->op > Py_GE || a->slot < -1 || a->slot >= t->nslots)
        return bad_spec("atom");
    if (a->kind == A_CALL ? !PyCallable_Check(a->fn) : a->left < 0 && a->kind != A_COMPARE && a->kind != A_IN && a->kind != A_NOT_IN)
        return bad_spec("atom operands");
    a->nguards = PyTuple_GET_SIZE(guards);
    a->guards = PyMem_Calloc(a->nguards ? a->nguards : 1, sizeof(Py_ssize_t));
    if (a->guards == NULL) {
        PyErr_NoMemory();
        return -1;
    }
    for (Py_ssize_t i = 0; i < a->nguards; i++)
        if (field_index(t, PyTuple_GET_ITEM(guards, i), &a->guards[i]) < 0 || a->guards[i] < 0)
            return bad_spec("guard");
    return 0;
}

static void
tree_dealloc(Tree *self)
{
    if (self->weakreflist != NULL)
        PyObject_ClearWeakRefs((PyObject *)self);
    node_free(&self->root);
    if (self->atoms != NULL) {
        for (Py_ssize_t i = 0; i < self->natoms; i++)
            PyMem_Free(self->atoms[i].guards);
        PyMem_Free(self->atoms);
    }
    PyMem_Free(self->rules);
    Py_XDECREF(self->spec);
    Py_XDECREF(self->tick);
    Py_XDECREF(self->pd_type);
    Py_TYPE(self)->tp_free((PyObject *)self);
}

static PyObject *
tree_new(PyTypeObject *type, PyObject *args, PyObject *kwds)
{
    static char *kwlist[] = {"fields", "atoms", "slots", "root", "verdicts", "ranks", "severities",
                             "otherwise_verdict", "otherwise_severity", "first_match", "decision_type", "tick", NULL};
    PyObject *atoms, *root, *verdicts, *ranks, *severities, *otherwise_verdict, *pd_type, *tick = Py_None;
    Py_ssize_t nfields, nslots;
    int otherwise_severity, first_match;
    if (!PyArg_ParseTupleAndKeywords(args, kwds, "nO!nOO!O!O!UipO!|O:Tree", kwlist, &nfields, &PyTuple_Type, &atoms, &nslots,
                                     &root, &PyTuple_Type, &verdicts, &PyTuple_Type, &ranks, &PyTuple_Type, &severities,
                                     &otherwise_verdict, &otherwise_severity, &first_match, &PyType_Type, &pd_type, &tick))
        return NULL;
    if (!PyType_IsSubtype((PyTypeObject *)pd_type, &PolicyDecisionCoreType)) {
        PyErr_SetString(PyExc_TypeError, "decision_type must subclass PolicyDecisionCore");
        return NULL;
    }
    Tree *self = (Tree *)type->tp_alloc(type, 0);
    if (self == NULL)
        return NULL;
    self->spec = PyTuple_Pack(4, atoms, root, verdicts, otherwise_verdict);
    self->pd_type = (PyTypeObject *)Py_NewRef(pd_type);
    self->tick = tick == Py_None ? NULL : Py_NewRef(tick);
    if (self->spec == NULL)
        goto fail;
    self->nfields = nfields;
    self->nslots = nslots;
    self->nrules = PyTuple_GET_SIZE(verdicts);
    self->otherwise_verdict = otherwise_verdict;
    self->otherwise_severity = otherwise_severity;
    self->first_match = first_match;
    if (PyTuple_GET_SIZE(ranks) != self->nrules || PyTuple_GET_SIZE(severities) != self->nrules) {
        bad_spec("one verdict, rank and severity per rule");
        goto fail;
    }
    self->rules = PyMem_Calloc(self->nrules ? self->nrules : 1, sizeof(RuleData));
    if (self->rules == NULL) {
        PyErr_NoMemory();
        goto fail;
    }
    for (Py_ssize_t i = 0; i < self->nrules; i++) {
        RuleData *r = &self->rules[i];
        r->verdict = PyTuple_GET_ITEM(verdicts, i);
        r->rank = (int)PyLong_AsLong(PyTuple_GET_ITEM(ranks, i));
        r->severity = (int)PyLong_AsLong(PyTuple_GET_ITEM(severities, i));
        if (PyErr_Occurred())
            goto fail;
        if (!PyUnicode_CheckExact(r->verdict) || r->severity < 0 || r->severity > 2 || r->rank < -1 || r->rank > 2
            || (r->rank >= 0 && r->rank != r->severity)) {
            bad_spec("verdicts");
            goto fail;
        }
        PyObject *known = self->verdict_of[r->severity];
        if (known != NULL && PyUnicode_Compare(known, r->verdict) != 0) {
            bad_spec("one verdict per severity");
            goto fail;
        }
        self->verdict_of[r->severity] = r->verdict;
    }
    self->natoms = PyTuple_GET_SIZE(atoms);
    self->atoms = PyMem_Calloc(self->natoms ? self->natoms : 1, sizeof(AtomSpec));
    if (self->atoms == NULL) {
        PyErr_NoMemory();
        goto fail;
    }
    for (Py_ssize_t i = 0; i < self->natoms; i++)
        if (build_atom(self, PyTuple_GET_ITEM(atoms, i), &self->atoms[i]) < 0)
            goto fail;
    if (build_node(self, root, &self->root) < 0)
        goto fail;
    PyMem_Free(self->rules);  /* the nodes and verdict_of carry what deciding needs of it */
    self->rules = NULL;
    return (PyObject *)self;
fail:
    Py_DECREF(self);
    return NULL;
}

/* ---- running ---- */

static inline PyObject *
operand(PyObject *const *vals, Py_ssize_t field, PyObject *constant)
{
    return field >= 0 ? vals[field] : constant;
}

static int
atom_compute(Tree *t, AtomSpec *a, PyObject *const *vals)
{
    for (Py_ssize_t i = 0; i < a->nguards; i++)
        if (vals[a->guards[i]] == Py_None)
            return FALSE3;
    PyObject *r;
    int b;
    switch (a->kind) {
    case A_TRUTH:
        return PyObject_IsTrue(vals[a->left]);
    case A_PRESENT:
        return vals[a->left] != Py_None;
    case A_COMPARE:
        r = PyObject_RichCompare(operand(vals, a->left, a->lconst), operand(vals, a->right, a->rconst), a->op);
        if (r == NULL)
            return -1;
        b = PyObject_IsTrue(r);
        Py_DECREF(r);
        return b;
    case A_IN:
    case A_NOT_IN:  /* `left in right`: right is the container */
        b = PySequence_Contains(operand(vals, a->right, a->rconst), operand(vals, a->left, a->lconst));
        return b < 0 ? -1 : (a->kind == A_IN ? b : !b);
    default:
        r = PyObject_Vectorcall(a->fn, vals, (size_t)t->nfields, NULL);
        if (r == NULL)
            return -1;
        b = r == Py_None ? ERROR3 : PyObject_IsTrue(r);
        Py_DECREF(r);
        return b;
    }
}

static int
atom_value(Tree *t, Py_ssize_t at, PyObject *const *vals, signed char *memo)
{
    AtomSpec *a = &t->atoms[at];
    if (a->slot >= 0 && memo[a->slot])
        return memo[a->slot] - 1;
    int r = atom_compute(t, a, vals);
    if (r < 0)
        return -1;
    if (t->tick != NULL) {
        PyObject *v = r == ERROR3 ? Py_None : (r ? Py_True : Py_False);
        PyObject *out = PyObject_CallFunctionObjArgs(t->tick, a->id, v, NULL);
        if (out == NULL)
            return -1;
        r = out == Py_None ? ERROR3 : PyObject_IsTrue(out);
        Py_DECREF(out);
        if (r < 0)
            return -1;
    }
    if (a->slot >= 0)
        memo[a->slot] = (signed char)(r + 1);
    return r;
}

/* Three-valued: `and` is false if any operand is, else an error if any errored; `or` likewise. */
static int
cond_value(Tree *t, Cond *c, PyObject *const *vals, signed char *memo)
{
    int r, error = 0;
    switch (c->kind) {
    case C_ATOM:
        return atom_value(t, c->atom, vals, memo);
    case C_NOT:
        r = cond_value(t, c->kids, vals, memo);
        return r < 0 || r == ERROR3 ? r : !r;
    case C_AND:
        for (Py_ssize_t i = 0; i < c->n; i++) {
            r = cond_value(t, &c->kids[i], vals, memo);
            if (r <= 0)
                return r;
            error |= r == ERROR3;
        }
        return error ? ERROR3 : TRUE3;
    default:
        for (Py_ssize_t i = 0; i < c->n; i++) {
            r = cond_value(t, &c->kids[i], vals, memo);
            if (r < 0 || r == TRUE3)
                return r;
            error |= r == ERROR3;
        }
        return error ? ERROR3 : FALSE3;
    }
}

/* Rule indices collected during a run: on the stack unless many rules match. */
typedef struct {
    Py_ssize_t n, cap, *items, stack[32];
} Indices;

static int
indices_add(Indices *b, Py_ssize_t v)
{
    if (b->n == b->cap) {
        Py_ssize_t cap = b->cap * 2;
        Py_ssize_t *items = b->items == b->stack ? PyMem_Malloc(cap * sizeof(Py_ssize_t)) : PyMem_Realloc(b->items, cap * sizeof(Py_ssize_t));
        if (items == NULL) {
            PyErr_NoMemory();
            return -1;
        }
        if (b->items == b->stack)
            memcpy(items, b->stack, sizeof(b->stack));
        b->items = items;
        b->cap = cap;
    }
    b->items[b->n++] = v;
    return 0;
}

static void
indices_init(Indices *b)
{
    b->n = 0;
    b->cap = sizeof(b->stack) / sizeof(b->stack[0]);
    b->items = b->stack;
}

static void
indices_free(Indices *b)
{
    if (b->items != b->stack)
        PyMem_Free(b->items);
}

static int
compare_index(const void *x, const void *y)
{
    Py_ssize_t a = *(const Py_ssize_t *)x, b = *(const Py_ssize_t *)y;
    return (a > b) - (a < b);
}

/* The indices (each shifted right by `shift`: matches carry their rank) as a tuple of ints, in
 * file order. New ints rather than a table of them: with thousands of rules, a table's int is
 * rarely in cache, and making one costs less. */
static PyObject *
indices_tuple(Indices *b, int sort, int shift)
{
    if (sort && b->n > 1)
        qsort(b->items, (size_t)b->n, sizeof(Py_ssize_t), compare_index);
    PyObject *out = PyTuple_New(b->n);
    if (out == NULL)
        return NULL;
    for (Py_ssize_t i = 0; i < b->n; i++) {
        PyObject *index = PyLong_FromSsize_t(b->items[i] >> shift);
        if (index == NULL) {
            Py_DECREF(out);
            return NULL;
        }
        PyTuple_SET_ITEM(out, i, index);
    }
    return out;
}

static int
node_run(Tree *t, Node *node, PyObject *const *vals, const int32_t *ordinals, signed char *memo, Indices *matched, Indices *errored)
{
    switch (node->kind) {
    case N_LEAF:
        for (Py_ssize_t i = 0; i < node->n; i++) {
            Check *check = &node->leaf.checks[i];
            int r = check->has_cond ? cond_value(t, &check->cond, vals, memo) : TRUE3;
            /* a match: the rule's index, its rank + 1 in the two low bits */
            if (r < 0 || (r == TRUE3 && indices_add(matched, check->rule << 2 | (check->rank + 1)) < 0)
                || (r == ERROR3 && indices_add(errored, check->rule) < 0))
                return -1;
        }
        return 0;
    case N_DISPATCH: {
        if (ordinals != NULL && node->branch.by_ordinal != NULL) {  /* a declared value of an enum: its branch, by its place */
            int32_t o = ordinals[node->branch.field];
            if (o >= 0 && o < node->branch.nordinals) {
                int32_t kid = node->branch.by_ordinal[o];
                return kid < 0 ? 0 : node_run(t, &node->branch.kids[kid], vals, ordinals, memo, matched, errored);
            }
        }
        PyObject *v = vals[node->branch.field];
        Py_hash_t hash = PyObject_Hash(v);
        if (hash == -1)
            return -1;
        for (size_t i = (size_t)hash & node->branch.mask;; i = (i + 1) & node->branch.mask) {
            Entry *e = &node->branch.entries[i];
            if (e->key == NULL)
                return 0;
            if (e->key == v)
                return node_run(t, &node->branch.kids[e->kid], vals, ordinals, memo, matched, errored);
            if (e->hash == hash) {
                int eq = PyObject_RichCompareBool(e->key, v, Py_EQ);
                if (eq < 0)
                    return -1;
                if (eq)
                    return node_run(t, &node->branch.kids[e->kid], vals, ordinals, memo, matched, errored);
            }
        }
    }
    default:
        for (Py_ssize_t i = 0; i < node->n; i++)
            if (node_run(t, &node->branch.kids[i], vals, ordinals, memo, matched, errored) < 0)
                return -1;
        return 0;
    }
}

#define MEMO_ON_STACK 256

/* Run the tree: the matching and the erroring rules, in tree order. */
static int
tree_run(Tree *t, PyObject *values, const int32_t *ordinals, Indices *matched, Indices *errored)
{
    if (!PyTuple_CheckExact(values) || PyTuple_GET_SIZE(values) != t->nfields) {
        PyErr_Format(PyExc_TypeError, "expected a tuple of %zd field values", t->nfields);
        return -1;
    }
    signed char stack[MEMO_ON_STACK];
    signed char *memo = stack;
    if (t->nslots > MEMO_ON_STACK) {
        memo = PyMem_Calloc((size_t)t->nslots, 1);
        if (memo == NULL) {
            PyErr_NoMemory();
            return -1;
        }
    }
    else
        memset(stack, 0, (size_t)t->nslots);
    int r = node_run(t, &t->root, &PyTuple_GET_ITEM(values, 0), ordinals, memo, matched, errored);
    if (memo != stack)
        PyMem_Free(memo);
    return r;
}

/* One policy's decision: run the tree, settle the verdict (most severe, or first, matching rule). */
static PyObject *
tree_settle(Tree *t, PyObject *compiled, PyObject *values, const int32_t *ordinals, int *severity)
{
    Indices m, e;
    indices_init(&m);
    indices_init(&e);
    PyObject *matched = NULL, *errored = NULL, *out = NULL;
    if (tree_run(t, values, ordinals, &m, &e) < 0 || (matched = indices_tuple(&m, 1, 2)) == NULL || (errored = indices_tuple(&e, 0, 0)) == NULL)
        goto done;
    Py_ssize_t index = -1;
    int best = -1;
    for (Py_ssize_t i = 0; i < m.n; i++) {
        int rank = (int)(m.items[i] & 3) - 1;
        if (t->first_match ? rank >= 0 : rank > best) {
            best = rank;
            index = m.items[i] >> 2;
            if (t->first_match)
                break;
        }
    }
    PolicyDecisionCore *pd = (PolicyDecisionCore *)t->pd_type->tp_alloc(t->pd_type, 0);
    if (pd == NULL)
        goto done;
    pd->verdict = Py_NewRef(index >= 0 ? t->verdict_of[best] : t->otherwise_verdict);
    pd->compiled = Py_NewRef(compiled);
    pd->values = Py_NewRef(values);
    pd->matched = Py_NewRef(matched);
    pd->errored = Py_NewRef(errored);
    pd->index = index;
    pd->built = Py_NewRef(Py_None);
    *severity = index >= 0 ? best : t->otherwise_severity;
    out = (PyObject *)pd;
done:
    indices_free(&m);
    indices_free(&e);
    Py_XDECREF(matched);
    Py_XDECREF(errored);
    return out;
}

static PyObject *
tree_match(Tree *self, PyObject *values)
{
    Indices m, e;
    indices_init(&m);
    indices_init(&e);
    PyObject *matched = NULL, *errored = NULL, *out = NULL;
    if (tree_run(self, values, NULL, &m, &e) == 0 && (matched = indices_tuple(&m, 0, 2)) != NULL && (errored = indices_tuple(&e, 0, 0)) != NULL)
        out = PyTuple_Pack(2, matched, errored);
    indices_free(&m);
    indices_free(&e);
    Py_XDECREF(matched);
    Py_XDECREF(errored);
    return out;
}

static PyObject *
tree_settle_py(Tree *self, PyObject *const *args, Py_ssize_t nargs)
{
    if (nargs != 2) {
        PyErr_SetString(PyExc_TypeError, "settle(compiled, values)");
        return NULL;
    }
    int severity;
    return tree_settle(self, args[0], args[1], NULL, &severity);
}

static PyMethodDef tree_methods[] = {
    {"match", (PyCFunction)tree_match, METH_O, "match(values) -> (matching rule indices, erroring rule indices), in tree order"},
    {"settle", (PyCFunction)(void (*)(void))tree_settle_py, METH_FASTCALL, "settle(compiled, values) -> PolicyDecision"},
    {NULL}
};

static PyTypeObject TreeType = {
    PyVarObject_HEAD_INIT(NULL, 0)
    .tp_name = "engine._native.Tree",
    .tp_doc = "A compiled policy's decision tree (built by engine.native.tree).",
    .tp_basicsize = sizeof(Tree),
    .tp_flags = Py_TPFLAGS_DEFAULT,
    .tp_new = tree_new,
    .tp_dealloc = (destructor)tree_dealloc,
    .tp_methods = tree_methods,
    .tp_weaklistoffset = offsetof(Tree, weakreflist),
};

/* ==== evaluator ======================================================================= */

typedef struct {
    PyObject_HEAD
    vectorcallfunc vectorcall;
    Validator *validator;
    PyObject *trees, *compiled;  /* tuples, policy by policy */
    PyObject *hash;
    PyTypeObject *decision_type;
    PyObject *empty;
    PyObject *named;  /* (annotations, policies) -> Decision: when policies are named; NULL: none */
} Evaluator;

static void
evaluator_dealloc(Evaluator *self)
{
    Py_XDECREF(self->validator);
    Py_XDECREF(self->trees);
    Py_XDECREF(self->compiled);
    Py_XDECREF(self->hash);
    Py_XDECREF(self->decision_type);
    Py_XDECREF(self->empty);
    Py_XDECREF(self->named);
    Py_TYPE(self)->tp_free((PyObject *)self);
}

static PyObject *evaluator_call(Evaluator *self, PyObject *const *args, size_t nargsf, PyObject *kwnames);

static PyObject *
evaluator_new(PyTypeObject *type, PyObject *args, PyObject *kwds)
{
    static char *kwlist[] = {"validator", "trees", "compiled", "hash", "decision_type", "named", NULL};
    PyObject *validator, *trees, *compiled, *hash, *decision_type, *named = Py_None;
    if (!PyArg_ParseTupleAndKeywords(args, kwds, "O!O!O!UO!|O:Evaluator", kwlist, &ValidatorType, &validator, &PyTuple_Type,
                                     &trees, &PyTuple_Type, &compiled, &hash, &PyType_Type, &decision_type, &named))
        return NULL;
    if (named != Py_None && !PyCallable_Check(named)) {
        PyErr_SetString(PyExc_TypeError, "named must be callable, or None");
        return NULL;
    }
    if (PyTuple_GET_SIZE(trees) != PyTuple_GET_SIZE(compiled) || PyTuple_GET_SIZE(trees) == 0) {
        PyErr_SetString(PyExc_ValueError, "one tree per compiled policy, at least one");
        return NULL;
    }
    for (Py_ssize_t i = 0; i < PyTuple_GET_SIZE(trees); i++)
        if (!PyObject_TypeCheck(PyTuple_GET_ITEM(trees, i), &TreeType)) {
            PyErr_SetString(PyExc_TypeError, "trees must be Tree objects");
            return NULL;
        }
    if (!PyType_IsSubtype((PyTypeObject *)decision_type, &DecisionCoreType)) {
        PyErr_SetString(PyExc_TypeError, "decision_type must subclass DecisionCore");
        return NULL;
    }
    Evaluator *self = (Evaluator *)type->tp_alloc(type, 0);
    if (self == NULL)
        return NULL;
    self->validator = (Validator *)Py_NewRef(validator);
    self->trees = Py_NewRef(trees);
    self->compiled = Py_NewRef(compiled);
    self->hash = Py_NewRef(hash);
    self->decision_type = (PyTypeObject *)Py_NewRef(decision_type);
    self->named = named == Py_None ? NULL : Py_NewRef(named);
    self->vectorcall = (vectorcallfunc)evaluator_call;
    self->empty = PyTuple_New(0);
    if (self->empty == NULL) {
        Py_DECREF(self);
        return NULL;
    }
    return (PyObject *)self;
}

static PyObject *
evaluator_call(Evaluator *self, PyObject *const *args, size_t nargsf, PyObject *kwnames)
{
    static PyObject *policies_str = NULL;
    if (policies_str == NULL && (policies_str = PyUnicode_InternFromString("policies")) == NULL)
        return NULL;
    Py_ssize_t nargs = PyVectorcall_NARGS(nargsf), nkw = kwnames == NULL ? 0 : PyTuple_GET_SIZE(kwnames);
    PyObject *names = nargs == 2 ? args[1] : NULL;
    int ok = nargs >= 1 && nargs <= 2 && nkw <= 1;
    if (ok && nkw == 1) {
        ok = names == NULL && PyUnicode_Compare(PyTuple_GET_ITEM(kwnames, 0), policies_str) == 0;
        names = args[nargs];
    }
    if (!ok) {
        PyErr_SetString(PyExc_TypeError, "evaluate(annotations, policies=None)");
        return NULL;
    }
    PyObject *a = args[0];
    if (names != NULL && names != Py_None) {  /* some policies, by name: the general path decides */
        int some = PyObject_IsTrue(names);
        if (some < 0)
            return NULL;
        if (some) {
            if (self->named == NULL) {
                PyErr_SetString(PyExc_TypeError, "this evaluator decides with every policy only");
                return NULL;
            }
            return PyObject_CallFunctionObjArgs(self->named, a, names, NULL);
        }
    }
    /* the unknown enum values, as (field, value) pairs: Decision.warnings words them when read */
    PyObject *input_warnings;
    int32_t on_stack[64], *ordinals = self->validator->n <= 64 ? on_stack : PyMem_Malloc(self->validator->n * sizeof(int32_t));
    if (ordinals == NULL)
        return PyErr_NoMemory();
    PyObject *values = validate_fast(self->validator, a, &input_warnings, ordinals);
    if (values == NULL) {
        if (ordinals != on_stack)
            PyMem_Free(ordinals);
        ordinals = NULL;  /* the Python validator's values: dispatch by value */
        if (PyErr_Occurred())
            return NULL;
        PyObject *out = validate(self->validator, a);
        if (out == NULL)
            return NULL;
        values = Py_NewRef(PyTuple_GET_ITEM(out, 0));
        input_warnings = Py_XNewRef(PyTuple_GET_ITEM(out, 1) == Py_None ? NULL : PyTuple_GET_ITEM(out, 1));
        Py_DECREF(out);
    }
    if (input_warnings == NULL)
        input_warnings = Py_NewRef(self->empty);
    Py_ssize_t n = PyTuple_GET_SIZE(self->trees);
    PyObject *policies = PyTuple_New(n), *top = NULL;
    DecisionCore *d = NULL;
    if (policies == NULL)
        goto done;
    int best = -1;
    for (Py_ssize_t i = 0; i < n; i++) {
        int severity;
        PyObject *pd = tree_settle((Tree *)PyTuple_GET_ITEM(self->trees, i), PyTuple_GET_ITEM(self->compiled, i), values, ordinals, &severity);
        if (pd == NULL)
            goto done;
        PyTuple_SET_ITEM(policies, i, pd);
        if (severity > best) {  /* the first, among equals */
            best = severity;
            top = pd;
        }
    }
    d = (DecisionCore *)self->decision_type->tp_alloc(self->decision_type, 0);
    if (d == NULL)
        goto done;
    d->verdict = Py_NewRef(((PolicyDecisionCore *)top)->verdict);
    d->policies = Py_NewRef(policies);
    d->hash = Py_NewRef(self->hash);
    d->input_warnings = Py_NewRef(input_warnings);
    d->top = Py_NewRef(top);
    d->built = Py_NewRef(Py_None);
done:
    if (ordinals != NULL && ordinals != on_stack)
        PyMem_Free(ordinals);
    Py_DECREF(values);
    Py_DECREF(input_warnings);
    Py_XDECREF(policies);
    return (PyObject *)d;
}

static PyTypeObject EvaluatorType = {
    PyVarObject_HEAD_INIT(NULL, 0)
    .tp_name = "engine._native.Evaluator",
    .tp_doc = "Evaluator(validator, trees, compiled, hash, decision_type, named=None)(annotations, policies=None) -> Decision;\n"
              "with policies named, named(annotations, policies) decides",
    .tp_basicsize = sizeof(Evaluator),
    .tp_flags = Py_TPFLAGS_DEFAULT | Py_TPFLAGS_HAVE_VECTORCALL,
    .tp_new = evaluator_new,
    .tp_dealloc = (destructor)evaluator_dealloc,
    .tp_vectorcall_offset = offsetof(Evaluator, vectorcall),
    .tp_call = PyVectorcall_Call,
};

/* ==== module ========================================================================== */

static struct PyModuleDef native_module = {
    PyModuleDef_HEAD_INIT,
    .m_name = "engine._native",
    .m_doc = "The per-decision hot path of pol: validation, decision trees, decisions.",
    .m_size = -1,
};

PyMODINIT_FUNC
PyInit__native(void)
{
    PyTypeObject *types[] = {&PolicyDecisionCoreType, &DecisionCoreType, &ValidatorType, &TreeType, &EvaluatorType};
    const char *names[] = {"PolicyDecisionCore", "DecisionCore", "Validator", "Tree", "Evaluator"};
    PyObject *m = PyModule_Create(&native_module);
    if (m == NULL)
        return NULL;
    for (size_t i = 0; i < sizeof(types) / sizeof(types[0]); i++) {
        if (PyType_Ready(types[i]) < 0 || PyModule_AddObjectRef(m, names[i], (PyObject *)types[i]) < 0) {
            Py_DECREF(m);
            return NULL;
        }
    }
    if (PyModule_AddIntConstant(m, "A_COMPARE", A_COMPARE) < 0 || PyModule_AddIntConstant(m, "A_TRUTH", A_TRUTH) < 0
        || PyModule_AddIntConstant(m, "A_IN", A_IN) < 0 || PyModule_AddIntConstant(m, "A_NOT_IN", A_NOT_IN) < 0
        || PyModule_AddIntConstant(m, "A_PRESENT", A_PRESENT) < 0 || PyModule_AddIntConstant(m, "A_CALL", A_CALL) < 0
        || PyModule_AddIntConstant(m, "C_AND", C_AND) < 0 || PyModule_AddIntConstant(m, "C_OR", C_OR) < 0
        || PyModule_AddIntConstant(m, "C_NOT", C_NOT) < 0 || PyModule_AddIntConstant(m, "C_ATOM", C_ATOM) < 0
        || PyModule_AddIntConstant(m, "N_LEAF", N_LEAF) < 0 || PyModule_AddIntConstant(m, "N_DISPATCH", N_DISPATCH) < 0
        || PyModule_AddIntConstant(m, "N_SEQ", N_SEQ) < 0 || PyModule_AddIntConstant(m, "K_STRING", K_STRING) < 0
        || PyModule_AddIntConstant(m, "K_ENUM", K_ENUM) < 0 || PyModule_AddIntConstant(m, "K_INT", K_INT) < 0
        || PyModule_AddIntConstant(m, "K_FLOAT", K_FLOAT) < 0 || PyModule_AddIntConstant(m, "K_BOOL", K_BOOL) < 0
        || PyModule_AddIntConstant(m, "K_STRINGS_LIST", K_STRINGS_LIST) < 0
        || PyModule_AddIntConstant(m, "K_STRINGS_SET", K_STRINGS_SET) < 0 || PyModule_AddIntConstant(m, "K_OTHER", K_OTHER) < 0) {
        Py_DECREF(m);
        return NULL;
    }
    return m;
}
