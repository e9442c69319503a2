/* pymapreduce._speedups: the shuffle's per-key loops in C.
 *
 * Two loops run once per map-output key and dominate a combining job's shuffle
 * (benchmarks/RESULTS.md, "In-mapper combining"): a map task choosing each key's
 * partition (and hash bucket), and a reduce task appending each key's values to its
 * group. In Python each key costs an encode, a crc32 call and four list lookups on one
 * side, a dict lookup and an append on the other; here the same work, without a Python
 * call or a temporary object per key.
 *
 * Everything here computes exactly what the Python loops it replaces compute
 * (pymapreduce/buckets.py, kernels.py): a str key's hash is zlib.crc32 of its UTF-8
 * bytes (lone surrogates passed through), any other key's is the job's stable_hash,
 * called back. pymapreduce works without this module (tests run both ways and compare).
 *
 * Keys and values may come from another process (a reduce task merges what map tasks
 * sent): nothing here trusts a length, an index or a type it did not check, and a key's
 * __eq__ or __hash__ (an unpickled user object's) may run Python code that changes the
 * lists being read, so each item is re-read, and held, within the bounds as they are.
 * What such a key gets is memory safety, not the Python loop's result: a loop over a
 * slice (Python) and one over the live list (here) see different items once a key's
 * __eq__ grows or shrinks the list; and a key whose __hash__ raises TypeError is hashed
 * once here and once more by the caller's loop it is handed to.
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <stdint.h>
#include <math.h>
#include <string.h>

/* 0 if a METH_FASTCALL function got ``want`` arguments, else -1 with a TypeError that
 * says what it takes */
static int
arity(Py_ssize_t nargs, Py_ssize_t want, const char *usage)
{
    if (nargs == want)
        return 0;
    PyErr_SetString(PyExc_TypeError, usage);
    return -1;
}

/* crc_table[0] is the byte-at-a-time table of CRC-32 (reflected, zlib's); crc_table[k]
 * advances a byte's contribution by k more bytes, so that eight bytes are folded in at
 * once ("slicing by 8"): a key's bytes cost a few independent table loads each, not one
 * dependent chain of eight steps per byte. */
static uint32_t crc_table[8][256];

static void
init_crc_table(void)
{
    for (uint32_t i = 0; i < 256; i++) {
        uint32_t c = i;
        for (int k = 0; k < 8; k++)
            c = (c & 1) ? (0xEDB88320u ^ (c >> 1)) : (c >> 1);
        crc_table[0][i] = c;
    }
    for (uint32_t i = 0; i < 256; i++)
        for (int k = 1; k < 8; k++)
            crc_table[k][i] = (crc_table[k - 1][i] >> 8)
                ^ crc_table[0][crc_table[k - 1][i] & 0xFFu];
}

/* four bytes as a little-endian number, whatever the host's byte order */
static inline uint32_t
le32(const unsigned char *p)
{
    return (uint32_t)p[0] | ((uint32_t)p[1] << 8) | ((uint32_t)p[2] << 16)
        | ((uint32_t)p[3] << 24);
}

/* zlib.crc32(data) */
static uint32_t
crc32_of(const unsigned char *p, Py_ssize_t n)
{
    uint32_t c = 0xFFFFFFFFu;
    while (n >= 8) {
        uint32_t one = le32(p) ^ c, two = le32(p + 4);
        c = crc_table[7][one & 0xFFu] ^ crc_table[6][(one >> 8) & 0xFFu]
            ^ crc_table[5][(one >> 16) & 0xFFu] ^ crc_table[4][one >> 24]
            ^ crc_table[3][two & 0xFFu] ^ crc_table[2][(two >> 8) & 0xFFu]
            ^ crc_table[1][(two >> 16) & 0xFFu] ^ crc_table[0][two >> 24];
        p += 8;
        n -= 8;
    }
    while (n-- > 0)
        c = crc_table[0][(c ^ *p++) & 0xFFu] ^ (c >> 8);
    return c ^ 0xFFFFFFFFu;
}

/* zlib.crc32(key.encode("utf-8", "surrogatepass")) of an exact str; -1 on error */
static int
str_crc(PyObject *key, uint32_t *out)
{
#if PY_VERSION_HEX < 0x030C0000
    if (PyUnicode_READY(key) < 0)
        return -1;
#endif
    if (PyUnicode_IS_ASCII(key)) {  /* its characters are its UTF-8 bytes */
        *out = crc32_of(PyUnicode_1BYTE_DATA(key), PyUnicode_GET_LENGTH(key));
        return 0;
    }
    PyObject *raw = PyUnicode_AsEncodedString(key, "utf-8", "surrogatepass");
    if (raw == NULL)
        return -1;
    *out = crc32_of((const unsigned char *)PyBytes_AS_STRING(raw), PyBytes_GET_SIZE(raw));
    Py_DECREF(raw);
    return 0;
}

PyDoc_STRVAR(str_crc32_doc,
"str_crc32(key) -> int\n\n"
"zlib.crc32(key.encode('utf-8', 'surrogatepass')) of a str.");

static PyObject *
str_crc32(PyObject *module, PyObject *key)
{
    uint32_t h;
    if (!PyUnicode_Check(key)) {
        PyErr_Format(PyExc_TypeError, "str_crc32 takes a str, not %.100s",
                     Py_TYPE(key)->tp_name);
        return NULL;
    }
    if (str_crc(key, &h) < 0)
        return NULL;
    return PyLong_FromUnsignedLong(h);
}

/* the bucket of a key that is not an exact str: stable_hash(key) % n */
static Py_ssize_t
other_bucket(PyObject *stable_hash, PyObject *key, PyObject *n_obj, Py_ssize_t n)
{
    PyObject *h = PyObject_CallOneArg(stable_hash, key);
    if (h == NULL)
        return -1;
    if (!PyLong_CheckExact(h)) {
        PyErr_Format(PyExc_TypeError, "stable_hash returned %.100s, not an int",
                     Py_TYPE(h)->tp_name);
        Py_DECREF(h);
        return -1;
    }
    PyObject *r = PyNumber_Remainder(h, n_obj);
    Py_DECREF(h);
    if (r == NULL)
        return -1;
    Py_ssize_t p = PyLong_AsSsize_t(r);
    Py_DECREF(r);
    if (p == -1 && PyErr_Occurred())
        return -1;
    if (p < 0 || p >= n) {
        PyErr_SetString(PyExc_ValueError, "a bucket out of range");
        return -1;
    }
    return p;
}

static PyObject *
new_lists(Py_ssize_t n)
{
    PyObject *lists = PyList_New(n);
    if (lists == NULL)
        return NULL;
    for (Py_ssize_t i = 0; i < n; i++) {
        PyObject *one = PyList_New(0);
        if (one == NULL) {
            Py_DECREF(lists);
            return NULL;
        }
        PyList_SET_ITEM(lists, i, one);
    }
    return lists;
}

/* The bucket of key ``k`` among ``n``: zlib.crc32 of an exact str's UTF-8, hash(k) &
 * (2**64 - 1) of an exact int's (2 set in *kinds), stable_hash(k) of any other's (4 set);
 * -1 on an error, -2 for any other key when stable_hash is None (left to the caller). */
static Py_ssize_t
key_bucket(PyObject *k, PyObject *n_obj, Py_ssize_t n, PyObject *stable_hash, long *kinds)
{
    if (PyUnicode_CheckExact(k)) {
        uint32_t h;
        if (str_crc(k, &h) < 0)
            return -1;
        /* (n fits 32 bits for any real job; past it, the 64-bit remainder) */
        return (uint64_t)n <= UINT32_MAX ? (Py_ssize_t)(h % (uint32_t)n)
                                         : (Py_ssize_t)((uint64_t)h % (uint64_t)n);
    }
    if (PyLong_CheckExact(k)) {
        Py_hash_t h = PyObject_Hash(k);
        if (h == -1 && PyErr_Occurred())
            return -1;
        *kinds |= 2;
        return (Py_ssize_t)((uint64_t)(int64_t)h % (uint64_t)n);
    }
    if (stable_hash == Py_None)
        return -2;
    *kinds |= 4;
    return other_bucket(stable_hash, k, n_obj, n);
}

/* ``n`` of bucket_pairs and bucket_groups: an int, at least 1 (no upper bound but
 * memory's, as the Python loops'); -1 with an error set otherwise */
static Py_ssize_t
bucket_count(PyObject *n_obj, const char *name)
{
    if (!PyLong_CheckExact(n_obj)) {
        PyErr_Format(PyExc_TypeError, "%s: n must be an int", name);
        return -1;
    }
    Py_ssize_t n = PyLong_AsSsize_t(n_obj);
    if (n == -1 && PyErr_Occurred())
        return -1;
    if (n < 1) {
        PyErr_Format(PyExc_ValueError, "%s: n out of range", name);
        return -1;
    }
    return n;
}

/* ``(kb, vb, kinds)``, the references to kb and vb given to it (dropped on an error) */
static PyObject *
bucket_result(PyObject *kb, PyObject *vb, long kinds)
{
    PyObject *kinds_obj = PyLong_FromLong(kinds), *out = NULL;
    if (kinds_obj != NULL)
        out = PyTuple_Pack(3, kb, vb, kinds_obj);
    Py_DECREF(kb);
    Py_DECREF(vb);
    Py_XDECREF(kinds_obj);
    return out;
}

PyDoc_STRVAR(bucket_pairs_doc,
"bucket_pairs(pairs, n, stable_hash) -> (keys, values, kinds) or None\n\n"
"Each (key, value) pair of the iterable ``pairs`` into bucket ``h % n``: ``h`` is\n"
"zlib.crc32 of a str key's UTF-8 bytes, ``hash(key) & (2**64 - 1)`` of an exact int's\n"
"(stable_hash's), ``stable_hash(key)`` of any other. ``keys`` and ``values`` are lists\n"
"of n lists, in the pairs' order within each; ``kinds`` has 2 set if an exact int key\n"
"was met and 4 if a key of another type (not str) was (buckets.py's ``kinds``).\n"
"With ``stable_hash`` None, None as soon as an item is not a tuple of two or a key is\n"
"neither an exact str nor an exact int: the caller's own loop then does it all.");

static PyObject *
bucket_pairs(PyObject *module, PyObject *const *args, Py_ssize_t nargs)
{
    if (arity(nargs, 3, "bucket_pairs takes pairs, n and stable_hash") < 0)
        return NULL;
    PyObject *pairs = args[0], *n_obj = args[1], *stable_hash = args[2];
    Py_ssize_t n = bucket_count(n_obj, "bucket_pairs");
    if (n < 0)
        return NULL;
    PyObject *kb = new_lists(n), *vb = NULL, *it = NULL, *item;
    long kinds = 0;
    if (kb == NULL || (vb = new_lists(n)) == NULL || (it = PyObject_GetIter(pairs)) == NULL)
        goto fail;
    while ((item = PyIter_Next(it)) != NULL) {
        Py_ssize_t p;
        if (!PyTuple_CheckExact(item) || PyTuple_GET_SIZE(item) != 2) {
            if (stable_hash != Py_None)
                PyErr_SetString(PyExc_TypeError, "bucket_pairs: a pair that is not a 2-tuple");
            p = stable_hash == Py_None ? -2 : -1;
        }
        else {
            p = key_bucket(PyTuple_GET_ITEM(item, 0), n_obj, n, stable_hash, &kinds);
        }
        int failed = p < 0
            || PyList_Append(PyList_GET_ITEM(kb, p), PyTuple_GET_ITEM(item, 0)) < 0
            || PyList_Append(PyList_GET_ITEM(vb, p), PyTuple_GET_ITEM(item, 1)) < 0;
        Py_DECREF(item);
        if (p == -2)
            goto give_up;
        if (failed)
            goto fail;
    }
    if (PyErr_Occurred())
        goto fail;
    Py_DECREF(it);
    return bucket_result(kb, vb, kinds);
give_up:
    Py_DECREF(kb);
    Py_DECREF(vb);
    Py_DECREF(it);
    Py_RETURN_NONE;
fail:
    Py_XDECREF(kb);
    Py_XDECREF(vb);
    Py_XDECREF(it);
    return NULL;
}

PyDoc_STRVAR(bucket_groups_doc,
"bucket_groups(groups, n, stable_hash, combiner) -> (keys, values, kinds)\n\n"
"bucket_pairs over a dict of lists, each list first made one value: its only item, or\n"
"``combiner(key, values)``, called as each key is reached, in the dict's order. A\n"
"combiner that adds or removes keys of ``groups`` raises RuntimeError, as iterating\n"
"the dict in Python would.");

static PyObject *
bucket_groups(PyObject *module, PyObject *const *args, Py_ssize_t nargs)
{
    if (arity(nargs, 4, "bucket_groups takes groups, n, stable_hash and combiner") < 0)
        return NULL;
    PyObject *groups = args[0], *n_obj = args[1], *stable_hash = args[2];
    PyObject *combiner = args[3];
    if (!PyDict_Check(groups)) {
        PyErr_SetString(PyExc_TypeError, "bucket_groups takes a dict");
        return NULL;
    }
    Py_ssize_t n = bucket_count(n_obj, "bucket_groups");
    if (n < 0)
        return NULL;
    PyObject *kb = new_lists(n), *vb = NULL;
    long kinds = 0;
    if (kb == NULL || (vb = new_lists(n)) == NULL)
        goto fail;
    Py_ssize_t pos = 0, size = PyDict_GET_SIZE(groups);
    PyObject *k, *values;
    while (PyDict_Next(groups, &pos, &k, &values)) {
        Py_INCREF(k);  /* (held: the combiner runs Python code) */
        Py_INCREF(values);
        PyObject *v;
        if (PyList_CheckExact(values) && PyList_GET_SIZE(values) == 1) {
            v = PyList_GET_ITEM(values, 0);
            Py_INCREF(v);
        }
        else {
            if (!PyList_CheckExact(values)) {
                PyErr_SetString(PyExc_TypeError, "bucket_groups: a group that is not a list");
                v = NULL;
            }
            else {
                v = PyObject_CallFunctionObjArgs(combiner, k, values, NULL);
            }
            if (v != NULL && PyDict_GET_SIZE(groups) != size) {
                PyErr_SetString(PyExc_RuntimeError, "dictionary changed size during iteration");
                Py_CLEAR(v);
            }
        }
        Py_DECREF(values);
        /* (stable_hash is never None here: a caller's function, or an error) */
        Py_ssize_t p = v == NULL ? -1 : key_bucket(k, n_obj, n, stable_hash, &kinds);
        if (p == -2) {
            PyErr_SetString(PyExc_TypeError, "bucket_groups: stable_hash is None");
            p = -1;
        }
        int failed = p < 0 || PyList_Append(PyList_GET_ITEM(kb, p), k) < 0 ||
                PyList_Append(PyList_GET_ITEM(vb, p), v) < 0;
        Py_DECREF(k);
        Py_XDECREF(v);
        if (failed)
            goto fail;
        if (PyDict_GET_SIZE(groups) != size) {  /* (stable_hash's Python code, too) */
            PyErr_SetString(PyExc_RuntimeError, "dictionary changed size during iteration");
            goto fail;
        }
    }
    return bucket_result(kb, vb, kinds);
fail:
    Py_XDECREF(kb);
    Py_XDECREF(vb);
    return NULL;
}

/* ``groups[k] = [v]``: a key's first value (as a defaultdict(list) gives); -1 on error */
static int
new_group(PyObject *groups, PyObject *k, PyObject *v)
{
    PyObject *one = PyList_New(1);
    if (one == NULL)
        return -1;
    Py_INCREF(v);
    PyList_SET_ITEM(one, 0, v);
    int failed = PyDict_SetItem(groups, k, one) < 0;
    Py_DECREF(one);
    return failed ? -1 : 0;
}

PyDoc_STRVAR(append_pairs_doc,
"append_pairs(groups, keys, values, lo, hi) -> None\n\n"
"``groups[k].append(v)`` for each pair of ``zip(keys[lo:hi], values[lo:hi])``: a key\n"
"not in the dict ``groups`` gets a new list (as a defaultdict(list) gives).");

static PyObject *
append_pairs(PyObject *module, PyObject *const *args, Py_ssize_t nargs)
{
    if (arity(nargs, 5, "append_pairs takes groups, keys, values, lo and hi") < 0)
        return NULL;
    PyObject *groups = args[0], *keys = args[1], *values = args[2];
    if (!PyDict_Check(groups) || !PyList_CheckExact(keys) || !PyList_CheckExact(values)) {
        PyErr_SetString(PyExc_TypeError, "append_pairs takes a dict and two lists");
        return NULL;
    }
    Py_ssize_t lo = PyLong_AsSsize_t(args[3]);
    if (lo == -1 && PyErr_Occurred())
        return NULL;
    Py_ssize_t hi = PyLong_AsSsize_t(args[4]);
    if (hi == -1 && PyErr_Occurred())
        return NULL;
    if (lo < 0)
        lo = 0;
    /* (the bounds are read again each pair: a key's __eq__ may change the lists) */
    for (Py_ssize_t i = lo; i < hi && i < PyList_GET_SIZE(keys)
            && i < PyList_GET_SIZE(values); i++) {
        PyObject *k = PyList_GET_ITEM(keys, i), *v = PyList_GET_ITEM(values, i);
        Py_INCREF(k);
        Py_INCREF(v);
        PyObject *group = PyDict_GetItemWithError(groups, k);  /* (borrowed) */
        int failed;
        if (group != NULL) {
            if (PyList_CheckExact(group)) {
                failed = PyList_Append(group, v) < 0;
            }
            else {  /* (not one of ours: its own append) */
                PyObject *r = PyObject_CallMethod(group, "append", "O", v);
                failed = r == NULL;
                Py_XDECREF(r);
            }
        }
        else if (PyErr_Occurred()) {
            failed = 1;
        }
        else {
            failed = new_group(groups, k, v) < 0;
        }
        Py_DECREF(k);
        Py_DECREF(v);
        if (failed)
            return NULL;
    }
    Py_RETURN_NONE;
}

PyDoc_STRVAR(group_pairs_doc,
"group_pairs(groups, pairs, combiner, every) -> None or (item,)\n\n"
"The pairs of the iterator ``pairs`` (a map's output) into ``groups``, a dict of lists:\n"
"``groups[k].append(v)`` for each tuple ``(k, v)``, and with a ``combiner`` (None: none)\n"
"a list that reaches ``every`` values becomes ``[combiner(k, values)]``. Returns None\n"
"once ``pairs`` is exhausted, or, in a tuple of one, the first item it leaves to the\n"
"caller's own loop: one that is not a tuple of two, or whose key cannot be hashed (a\n"
"TypeError; an item may be None itself, hence the tuple); the caller\n"
"deals with that one and calls again with the same iterator for the rest. An error of\n"
"the iterator or of the combiner is raised as it is.");

/* ``(item,)``, the item's reference given to the tuple */
static PyObject *
left(PyObject *item)
{
    PyObject *one = PyTuple_Pack(1, item);
    Py_DECREF(item);
    return one;
}

static PyObject *
group_pairs(PyObject *module, PyObject *const *args, Py_ssize_t nargs)
{
    if (arity(nargs, 4, "group_pairs takes groups, pairs, combiner and every") < 0)
        return NULL;
    PyObject *groups = args[0], *it = args[1], *combiner = args[2];
    if (!PyDict_Check(groups) || !PyIter_Check(it)) {
        PyErr_SetString(PyExc_TypeError, "group_pairs takes a dict and an iterator");
        return NULL;
    }
    Py_ssize_t every = PyLong_AsSsize_t(args[3]);
    if (every == -1 && PyErr_Occurred())
        return NULL;
    if (every < 1) {
        PyErr_SetString(PyExc_ValueError, "group_pairs: every must be at least 1");
        return NULL;
    }
    int combining = combiner != Py_None;
    PyObject *item;
    while ((item = PyIter_Next(it)) != NULL) {
        if (!PyTuple_CheckExact(item) || PyTuple_GET_SIZE(item) != 2)
            return left(item);  /* (the caller's: as_pair says what it is) */
        PyObject *k = PyTuple_GET_ITEM(item, 0), *v = PyTuple_GET_ITEM(item, 1);
        PyObject *values = PyDict_GetItemWithError(groups, k);  /* (borrowed) */
        if (values == NULL) {
            if (PyErr_Occurred()) {
                if (PyErr_ExceptionMatches(PyExc_TypeError)) {  /* unhashable: the caller's */
                    PyErr_Clear();
                    return left(item);
                }
                Py_DECREF(item);
                return NULL;
            }
            int failed = new_group(groups, k, v) < 0;
            Py_DECREF(item);
            if (failed)
                return NULL;
            continue;
        }
        Py_INCREF(values);  /* (held: the combiner may change the dict) */
        if (!PyList_CheckExact(values)) {
            Py_DECREF(values);
            PyErr_SetString(PyExc_TypeError, "group_pairs: a group that is not a list");
            Py_DECREF(item);
            return NULL;
        }
        if (PyList_Append(values, v) < 0)
            goto fail;
        if (combining && PyList_GET_SIZE(values) >= every) {
            PyObject *r = PyObject_CallFunctionObjArgs(combiner, k, values, NULL);
            if (r == NULL)
                goto fail;
            PyObject *just = PyList_New(1);
            if (just == NULL) {
                Py_DECREF(r);
                goto fail;
            }
            PyList_SET_ITEM(just, 0, r);  /* (steals r) */
            int failed = PyList_SetSlice(values, 0, PY_SSIZE_T_MAX, just) < 0;
            Py_DECREF(just);
            if (failed)
                goto fail;
        }
        Py_DECREF(values);
        Py_DECREF(item);
        continue;
    fail:
        Py_DECREF(values);
        Py_DECREF(item);
        return NULL;
    }
    if (PyErr_Occurred())
        return NULL;
    Py_RETURN_NONE;
}

/* ---- A map task's partitions packed from its hash buckets ---------------------------
 *
 * What ``pack([keys, values, cuts])`` gives (msgpack, as patterns/records.py packs: the
 * smallest form of each int, str8 allowed, floats as doubles) for each partition of a
 * map task's buckets (buckets.py: ``join_buckets`` then ``pack``), written straight from
 * the bucket lists: no joined lists, no packer's checks per item. Only None, bools,
 * exact ints that fit 64 bits, exact floats and exact str whose UTF-8 exists are written
 * here; at any other item the whole is left to the Python path (None returned), which
 * packs what this cannot or raises what packing raises.
 */

typedef struct {
    unsigned char *p;
    size_t len, cap;
} Buf;

static int
buf_grow(Buf *b, size_t more)
{
    if (b->cap - b->len >= more)
        return 0;
    size_t cap = b->cap ? b->cap : 4096;
    while (cap - b->len < more) {
        if (cap > ((size_t)PY_SSIZE_T_MAX) / 2) {
            PyErr_NoMemory();
            return -1;
        }
        cap *= 2;
    }
    unsigned char *p = PyMem_Realloc(b->p, cap);
    if (p == NULL) {
        PyErr_NoMemory();
        return -1;
    }
    b->p = p;
    b->cap = cap;
    return 0;
}

/* ``n`` bytes of ``v``, most significant first */
static inline void
put_be(unsigned char *out, uint64_t v, int n)
{
    for (int i = n - 1; i >= 0; i--) {
        out[i] = (unsigned char)(v & 0xFF);
        v >>= 8;
    }
}

static int
put_head(Buf *b, unsigned char tag, uint64_t v, int n)
{
    if (buf_grow(b, 1 + (size_t)n) < 0)
        return -1;
    b->p[b->len] = tag;
    put_be(b->p + b->len + 1, v, n);
    b->len += 1 + (size_t)n;
    return 0;
}

static int
put_array_head(Buf *b, Py_ssize_t n)
{
    if (n < 16)
        return put_head(b, (unsigned char)(0x90 | n), 0, 0);
    if (n < 65536)
        return put_head(b, 0xdc, (uint64_t)n, 2);
    if ((uint64_t)n <= 0xFFFFFFFFu)
        return put_head(b, 0xdd, (uint64_t)n, 4);
    return 1;  /* (past msgpack: the Python path's error) */
}

/* an exact int, as msgpack's packer writes it; 1: too large for 64 bits (left) */
static int
put_int(Buf *b, PyObject *o)
{
    int overflow = 0;
    long long v = PyLong_AsLongLongAndOverflow(o, &overflow);
    if (v == -1 && PyErr_Occurred())
        return -1;
    if (overflow < 0)
        return 1;
    if (overflow > 0) {
        unsigned long long u = PyLong_AsUnsignedLongLong(o);
        if (u == (unsigned long long)-1 && PyErr_Occurred()) {
            PyErr_Clear();
            return 1;
        }
        return put_head(b, 0xcf, u, 8);
    }
    if (v >= 0) {
        if (v < 128)
            return put_head(b, (unsigned char)v, 0, 0);
        if (v < 256)
            return put_head(b, 0xcc, (uint64_t)v, 1);
        if (v < 65536)
            return put_head(b, 0xcd, (uint64_t)v, 2);
        if (v <= 0xFFFFFFFFLL)
            return put_head(b, 0xce, (uint64_t)v, 4);
        return put_head(b, 0xcf, (uint64_t)v, 8);
    }
    if (v >= -32)
        return put_head(b, (unsigned char)(0xe0 | (v & 0x1f)), 0, 0);
    if (v >= -128)
        return put_head(b, 0xd0, (uint64_t)v & 0xFF, 1);
    if (v >= -32768)
        return put_head(b, 0xd1, (uint64_t)v & 0xFFFF, 2);
    if (v >= -2147483648LL)
        return put_head(b, 0xd2, (uint64_t)v & 0xFFFFFFFFu, 4);
    return put_head(b, 0xd3, (uint64_t)v, 8);
}

/* one item; 1: not one of the types written here (left to the Python path) */
static int
put_item(Buf *b, PyObject *o)
{
    if (PyUnicode_CheckExact(o)) {
        Py_ssize_t n;
        const char *data;
#if PY_VERSION_HEX < 0x030C0000
        if (PyUnicode_READY(o) < 0)
            return -1;
#endif
        if (PyUnicode_IS_ASCII(o)) {
            data = (const char *)PyUnicode_1BYTE_DATA(o);
            n = PyUnicode_GET_LENGTH(o);
        }
        else if ((data = PyUnicode_AsUTF8AndSize(o, &n)) == NULL) {
            PyErr_Clear();  /* (a lone surrogate: packing's own error, on its path) */
            return 1;
        }
        int r;
        if (n < 32)
            r = put_head(b, (unsigned char)(0xa0 | n), 0, 0);
        else if (n < 256)
            r = put_head(b, 0xd9, (uint64_t)n, 1);
        else if (n < 65536)
            r = put_head(b, 0xda, (uint64_t)n, 2);
        else if ((uint64_t)n <= 0xFFFFFFFFu)
            r = put_head(b, 0xdb, (uint64_t)n, 4);
        else
            return 1;
        if (r != 0 || buf_grow(b, (size_t)n) < 0)
            return -1;
        memcpy(b->p + b->len, data, (size_t)n);
        b->len += (size_t)n;
        return 0;
    }
    if (PyLong_CheckExact(o))
        return put_int(b, o);
    if (o == Py_None)
        return put_head(b, 0xc0, 0, 0);
    if (o == Py_False)
        return put_head(b, 0xc2, 0, 0);
    if (o == Py_True)
        return put_head(b, 0xc3, 0, 0);
    if (PyFloat_CheckExact(o)) {
        double d = PyFloat_AS_DOUBLE(o);
        uint64_t bits;
        memcpy(&bits, &d, 8);
        return put_head(b, 0xcb, bits, 8);
    }
    return 1;
}

PyDoc_STRVAR(pack_buckets_doc,
"pack_buckets(kb, vb, reducers) -> list of bytes, or None\n\n"
"Each partition p of a map task's hash buckets (the lists kb[i] and vb[i] for i in\n"
"range(p, len(kb), reducers)) packed as ``pack([keys, values, cuts])`` would pack it:\n"
"``cuts`` the offsets where each bucket ends if every key is an exact str or every key\n"
"an exact int, else True; b'' for a partition of no keys. None if an item is of a type\n"
"not written here (the caller packs it all in Python).");

static PyObject *
pack_buckets(PyObject *module, PyObject *const *args, Py_ssize_t nargs)
{
    if (arity(nargs, 3, "pack_buckets takes kb, vb and reducers") < 0)
        return NULL;
    PyObject *kb = args[0], *vb = args[1];
    if (!PyList_CheckExact(kb) || !PyList_CheckExact(vb)
            || PyList_GET_SIZE(kb) != PyList_GET_SIZE(vb)) {
        PyErr_SetString(PyExc_TypeError, "pack_buckets takes two lists of one length");
        return NULL;
    }
    Py_ssize_t reducers = bucket_count(args[2], "pack_buckets");
    if (reducers < 0)
        return NULL;
    Py_ssize_t nb = PyList_GET_SIZE(kb);
    if (nb % reducers != 0) {
        PyErr_SetString(PyExc_ValueError, "pack_buckets: buckets not a multiple of reducers");
        return NULL;
    }
    for (Py_ssize_t i = 0; i < nb; i++) {
        PyObject *ks = PyList_GET_ITEM(kb, i), *vs = PyList_GET_ITEM(vb, i);
        if (!PyList_CheckExact(ks) || !PyList_CheckExact(vs)
                || PyList_GET_SIZE(ks) != PyList_GET_SIZE(vs)) {
            PyErr_SetString(PyExc_TypeError,
                            "pack_buckets: a bucket that is not two lists of one length");
            return NULL;
        }
    }
    /* (no Python code runs below: the items are exact types, the lists cannot change) */
    Buf *bufs = PyMem_Calloc((size_t)reducers, sizeof(Buf));
    if (bufs == NULL)
        return PyErr_NoMemory();
    PyObject *out = NULL;
    int all_str = 1, all_int = 1, r = 0;
    for (Py_ssize_t p = 0; p < reducers && r == 0; p++) {
        Buf *b = &bufs[p];
        Py_ssize_t total = 0;
        for (Py_ssize_t i = p; i < nb; i += reducers)
            total += PyList_GET_SIZE(PyList_GET_ITEM(kb, i));
        if (total == 0)
            continue;
        if ((r = put_head(b, 0x93, 0, 0)) != 0 || (r = put_array_head(b, total)) != 0)
            break;
        for (Py_ssize_t i = p; i < nb && r == 0; i += reducers) {
            PyObject *ks = PyList_GET_ITEM(kb, i);
            for (Py_ssize_t j = 0; j < PyList_GET_SIZE(ks) && r == 0; j++) {
                PyObject *k = PyList_GET_ITEM(ks, j);
                all_str &= PyUnicode_CheckExact(k);
                all_int &= PyLong_CheckExact(k);
                r = put_item(b, k);
            }
        }
        if (r == 0)
            r = put_array_head(b, total);
        for (Py_ssize_t i = p; i < nb && r == 0; i += reducers) {
            PyObject *vs = PyList_GET_ITEM(vb, i);
            for (Py_ssize_t j = 0; j < PyList_GET_SIZE(vs) && r == 0; j++)
                r = put_item(b, PyList_GET_ITEM(vs, j));
        }
    }
    if (r != 0)
        goto done;
    /* each non-empty partition's third item: its buckets' ends, or True */
    int cuts = all_str || all_int;
    for (Py_ssize_t p = 0; p < reducers && r == 0; p++) {
        Buf *b = &bufs[p];
        if (b->len == 0)
            continue;
        if (!cuts) {
            r = put_head(b, 0xc3, 0, 0);
            continue;
        }
        r = put_array_head(b, nb / reducers);
        Py_ssize_t end = 0;
        for (Py_ssize_t i = p; i < nb && r == 0; i += reducers) {
            end += PyList_GET_SIZE(PyList_GET_ITEM(kb, i));
            PyObject *e = PyLong_FromSsize_t(end);
            if (e == NULL) {
                r = -1;
                break;
            }
            r = put_int(b, e);
            Py_DECREF(e);
        }
    }
    if (r != 0)
        goto done;
    out = PyList_New(reducers);
    for (Py_ssize_t p = 0; out != NULL && p < reducers; p++) {
        PyObject *blob = PyBytes_FromStringAndSize((const char *)bufs[p].p,
                                                   (Py_ssize_t)bufs[p].len);
        if (blob == NULL)
            Py_CLEAR(out);
        else
            PyList_SET_ITEM(out, p, blob);
    }
done:
    for (Py_ssize_t p = 0; p < reducers; p++)
        PyMem_Free(bufs[p].p);
    PyMem_Free(bufs);
    if (r > 0 && !PyErr_Occurred())
        Py_RETURN_NONE;
    return out;
}

/* the bytes of partitions from per-bucket key and value bytes (bucket_pack) */
static PyObject *
join_packed(Buf *kbuf, Buf *vbuf, Py_ssize_t *count, Py_ssize_t reducers, Py_ssize_t nb,
            int cuts)
{
    PyObject *out = PyList_New(reducers);
    if (out == NULL)
        return NULL;
    for (Py_ssize_t p = 0; p < reducers; p++) {
        Py_ssize_t total = 0;
        size_t bytes = 0;
        for (Py_ssize_t i = p; i < nb; i += reducers) {
            total += count[i];
            bytes += kbuf[i].len + vbuf[i].len;
        }
        Buf b = {NULL, 0, 0};
        int r = 0;
        if (total > 0) {
            r = buf_grow(&b, bytes + 32 + 9 * (size_t)(nb / reducers));
            if (r == 0)
                r = put_head(&b, 0x93, 0, 0);
            if (r == 0)
                r = put_array_head(&b, total);
            for (Py_ssize_t i = p; i < nb && r == 0; i += reducers) {
                if (kbuf[i].len > 0)  /* (room made above) */
                    memcpy(b.p + b.len, kbuf[i].p, kbuf[i].len);
                b.len += kbuf[i].len;
            }
            if (r == 0)
                r = put_array_head(&b, total);
            for (Py_ssize_t i = p; i < nb && r == 0; i += reducers) {
                if (vbuf[i].len > 0 && (r = buf_grow(&b, vbuf[i].len)) == 0) {
                    memcpy(b.p + b.len, vbuf[i].p, vbuf[i].len);
                    b.len += vbuf[i].len;
                }
            }
            if (r == 0 && !cuts)
                r = put_head(&b, 0xc3, 0, 0);
            else if (r == 0) {
                r = put_array_head(&b, nb / reducers);
                Py_ssize_t end = 0;
                for (Py_ssize_t i = p; i < nb && r == 0; i += reducers) {
                    end += count[i];
                    PyObject *e = PyLong_FromSsize_t(end);
                    if (e == NULL)
                        r = -1;
                    else {
                        r = put_int(&b, e);
                        Py_DECREF(e);
                    }
                }
            }
        }
        PyObject *blob = r == 0 ? PyBytes_FromStringAndSize((const char *)b.p,
                                                            (Py_ssize_t)b.len) : NULL;
        PyMem_Free(b.p);
        if (blob == NULL) {
            Py_DECREF(out);
            if (r > 0 && !PyErr_Occurred())
                PyErr_SetString(PyExc_ValueError, "bucket_pack: a partition past msgpack");
            return NULL;
        }
        PyList_SET_ITEM(out, p, blob);
    }
    return out;
}

/* A map task's output packed bucket by bucket as it is reached (bucket_pack,
 * bucket_groups_pack): each bucket's keys' and values' bytes, its count of pairs, and
 * whether every key so far was an exact str, or every one an exact int. */
typedef struct {
    Py_ssize_t reducers, nb;
    PyObject *n_obj;
    Buf *kbuf, *vbuf;
    Py_ssize_t *count;
    int all_str, all_int;
} Packer;

/* 0, or -1 with an error set (the Packer to close all the same) */
static int
packer_open(Packer *pk, PyObject *reducers, PyObject *buckets, const char *name)
{
    memset(pk, 0, sizeof(*pk));
    pk->all_str = pk->all_int = 1;
    if ((pk->reducers = bucket_count(reducers, name)) < 0)
        return -1;
    Py_ssize_t per = bucket_count(buckets, name);
    if (per < 0)
        return -1;
    if (pk->reducers > PY_SSIZE_T_MAX / per / (Py_ssize_t)(2 * sizeof(Buf) + sizeof(Py_ssize_t))) {
        PyErr_NoMemory();
        return -1;
    }
    pk->nb = pk->reducers * per;
    pk->n_obj = PyLong_FromSsize_t(pk->nb);
    pk->kbuf = PyMem_Calloc((size_t)pk->nb, sizeof(Buf));
    pk->vbuf = PyMem_Calloc((size_t)pk->nb, sizeof(Buf));
    pk->count = PyMem_Calloc((size_t)pk->nb, sizeof(Py_ssize_t));
    if (pk->n_obj == NULL || pk->kbuf == NULL || pk->vbuf == NULL || pk->count == NULL) {
        if (!PyErr_Occurred())
            PyErr_NoMemory();
        return -1;
    }
    return 0;
}

/* a pair into its key's bucket: 0; 1, nothing written, for a key or value not written
 * here; -1 with an error set */
static int
packer_add(Packer *pk, PyObject *k, PyObject *v)
{
    if (!PyUnicode_CheckExact(k) && !PyLong_CheckExact(k))
        return 1;
    long kinds = 0;
    Py_ssize_t b = key_bucket(k, pk->n_obj, pk->nb, Py_None, &kinds);
    if (b < 0)
        return -1;
    Buf *kb = &pk->kbuf[b], *vb = &pk->vbuf[b];
    size_t klen = kb->len, vlen = vb->len;
    int r = put_item(kb, k);
    if (r == 0)
        r = put_item(vb, v);
    if (r != 0) {  /* (a half-written pair taken back) */
        kb->len = klen;
        vb->len = vlen;
        return r;
    }
    pk->all_str &= kinds == 0;
    pk->all_int &= kinds != 0;
    pk->count[b]++;
    return 0;
}

static void
packer_close(Packer *pk)
{
    for (Py_ssize_t j = 0; j < pk->nb; j++) {
        if (pk->kbuf != NULL)
            PyMem_Free(pk->kbuf[j].p);
        if (pk->vbuf != NULL)
            PyMem_Free(pk->vbuf[j].p);
    }
    PyMem_Free(pk->kbuf);
    PyMem_Free(pk->vbuf);
    PyMem_Free(pk->count);
    Py_XDECREF(pk->n_obj);
}

/* the partitions' bytes (r == 0), None (r > 0: left to the caller), or NULL (an error) */
static PyObject *
packer_finish(Packer *pk, int r)
{
    PyObject *out = NULL;
    if (r == 0)
        out = join_packed(pk->kbuf, pk->vbuf, pk->count, pk->reducers, pk->nb,
                          pk->all_str || pk->all_int);
    packer_close(pk);
    if (r > 0 && !PyErr_Occurred())
        Py_RETURN_NONE;
    return out;
}

PyDoc_STRVAR(bucket_pack_doc,
"bucket_pack(pairs, reducers, buckets) -> list of bytes, or None\n\n"
"bucket_pairs then pack_buckets in one pass, for pairs that are a dict's items or a\n"
"list of 2-tuples: each pair's key and value packed into its hash bucket's bytes as it\n"
"is reached (no bucket lists; each key read once). None, having changed nothing, at\n"
"the first pair that is not a 2-tuple, key that is not an exact str or int, or item\n"
"that pack_buckets would leave: the caller's bucket_pairs and packing do it all.");

static PyObject *
bucket_pack(PyObject *module, PyObject *const *args, Py_ssize_t nargs)
{
    if (arity(nargs, 3, "bucket_pack takes pairs, reducers and buckets") < 0)
        return NULL;
    PyObject *pairs = args[0], *it = NULL, *item = NULL;
    Packer pk;
    int r = packer_open(&pk, args[1], args[2], "bucket_pack");
    int is_list = PyList_CheckExact(pairs);
    if (r == 0 && !is_list && !PyDictItems_Check(pairs))
        r = 1;  /* (iterables whose iteration may run code: not here) */
    if (r == 0 && !is_list && (it = PyObject_GetIter(pairs)) == NULL)
        r = -1;
    /* (no Python code runs in this loop: a list's items or a dict's, iterated in C,
     * exact str and int keys hashed in C, items written in C; nothing can change the
     * pairs under it) */
    for (Py_ssize_t i = 0; r == 0;) {
        if (is_list) {
            if (i >= PyList_GET_SIZE(pairs))
                break;
            item = PyList_GET_ITEM(pairs, i++);
        }
        else {
            Py_XDECREF(item);  /* (the last one: its tuple may be reused for the next) */
            if ((item = PyIter_Next(it)) == NULL) {
                r = PyErr_Occurred() ? -1 : 0;
                break;
            }
        }
        if (!PyTuple_CheckExact(item) || PyTuple_GET_SIZE(item) != 2)
            r = 1;
        else
            r = packer_add(&pk, PyTuple_GET_ITEM(item, 0), PyTuple_GET_ITEM(item, 1));
    }
    if (!is_list)
        Py_XDECREF(item);
    Py_XDECREF(it);
    return packer_finish(&pk, r);
}

PyDoc_STRVAR(bucket_groups_pack_doc,
"bucket_groups_pack(groups, reducers, buckets, combiner) -> list of bytes, or None\n\n"
"bucket_groups then pack_buckets in one pass over a dict of lists: each list made one\n"
"value (its only item, or ``combiner(key, values)`` called as the key is reached), the\n"
"key and value packed into the key's hash bucket's bytes. None at the first key that\n"
"is not an exact str or int or value that pack_buckets would leave; each key combined\n"
"until then has its value put back in ``groups`` as a list of one, so that the\n"
"caller's own loops, run next, call the combiner for no key twice.");

static PyObject *
bucket_groups_pack(PyObject *module, PyObject *const *args, Py_ssize_t nargs)
{
    if (arity(nargs, 4, "bucket_groups_pack takes groups, reducers, buckets and combiner") < 0)
        return NULL;
    PyObject *groups = args[0], *combiner = args[3];
    if (!PyDict_Check(groups)) {
        PyErr_SetString(PyExc_TypeError, "bucket_groups_pack takes a dict");
        return NULL;
    }
    Packer pk;
    int r = packer_open(&pk, args[1], args[2], "bucket_groups_pack");
    PyObject *combined = r == 0 ? PyList_New(0) : NULL;  /* keys and values, in turn */
    if (r == 0 && combined == NULL)
        r = -1;
    if (combined != NULL)  /* (out of gc.get_objects()' reach: no finalizer changes it) */
        PyObject_GC_UnTrack(combined);
    Py_ssize_t pos = 0, size = PyDict_GET_SIZE(groups);
    PyObject *k, *values;
    while (r == 0 && PyDict_Next(groups, &pos, &k, &values)) {
        if (!PyUnicode_CheckExact(k) && !PyLong_CheckExact(k)) {
            r = 1;  /* (before its combiner runs: the caller's loops combine it) */
            break;
        }
        if (!PyList_CheckExact(values)) {
            PyErr_SetString(PyExc_TypeError, "bucket_groups: a group that is not a list");
            r = -1;
            break;
        }
        Py_INCREF(k);  /* (held: the combiner runs Python code) */
        PyObject *v;
        if (PyList_GET_SIZE(values) == 1) {
            v = Py_NewRef(PyList_GET_ITEM(values, 0));
        }
        else {
            v = PyObject_CallFunctionObjArgs(combiner, k, values, NULL);
            if (v != NULL && PyDict_GET_SIZE(groups) != size) {
                PyErr_SetString(PyExc_RuntimeError, "dictionary changed size during iteration");
                Py_CLEAR(v);
            }
            if (v != NULL && (PyList_Append(combined, k) < 0
                              || PyList_Append(combined, v) < 0))
                Py_CLEAR(v);
        }
        r = v == NULL ? -1 : packer_add(&pk, k, v);
        Py_DECREF(k);
        Py_XDECREF(v);
    }
    /* left to the caller: what was combined goes back as lists of one */
    for (Py_ssize_t i = 0; r > 0 && i + 1 < PyList_GET_SIZE(combined); i += 2) {
        /* (both held before a list is made: making it may run finalizers) */
        PyObject *ck = Py_NewRef(PyList_GET_ITEM(combined, i));
        PyObject *cv = Py_NewRef(PyList_GET_ITEM(combined, i + 1));
        PyObject *one = PyList_New(1);
        if (one == NULL)
            r = -1;
        else {
            PyList_SET_ITEM(one, 0, cv);  /* (its reference given to the list) */
            cv = NULL;
            if (PyDict_SetItem(groups, ck, one) < 0)
                r = -1;
            Py_DECREF(one);
        }
        Py_DECREF(ck);
        Py_XDECREF(cv);
    }
    Py_XDECREF(combined);
    return packer_finish(&pk, r);
}

/* ---- Sorting a list of str: what sorted() gives, by prefixes first ------------------
 *
 * sorted() of many distinct str keys (a reduce task's 233,000 words) spends most of its
 * time in comparisons that each read two keys lying anywhere in memory. Here each key is
 * read once for a number made of its first 8 bytes of UTF-8, the numbers are sorted by
 * radix (a few passes over a compact array), and only keys whose numbers tie are looked
 * at again. Code point order, as str's own comparison; stable, as sorted().
 *
 * Why the numbers order the keys: UTF-8 bytes compared one by one order code point
 * sequences as the code points do (lone surrogates included, written as their 3 bytes),
 * and a key that ends is read as 0 bytes, below every character's first byte but NUL's.
 * So if a's number is less than b's, a < b. Equal numbers: the same leading complete
 * characters, read on from where they end, unless a key ended within the 8 bytes (then
 * it ties only with keys that go on with NULs or end too: whole comparisons settle it).
 * A group of keys that share a long beginning skips it in one pass (their common prefix,
 * measured), and past MAX_LEVELS rounds the keys left are compared whole, so no input
 * costs deep recursion. A list already in order is found in one pass and kept as it is.
 */

/* Items of a sorted list lie all over memory: a loop that reads each one waits for it
 * (three quarters of writing a sorted partition's lines, by perf). Asking for the item
 * some places ahead (its header, and the two lines after, where a short str's text
 * is) lets those loads overlap. */
#define PREFETCH_AHEAD 8

static inline void
prefetch_object(PyObject *o)
{
#if defined(__GNUC__) || defined(__clang__)
    __builtin_prefetch((const char *)o);
    __builtin_prefetch((const char *)o + 64);
    __builtin_prefetch((const char *)o + 128);
#else
    (void)o;
#endif
}

typedef struct {
    uint64_t pre;       /* the number */
    Py_ssize_t at;      /* the key's index in the list */
} SortItem;

/* what prefix_of says besides the number, kept in the top bits of ``at`` (an index into
 * a list is far below 2**48): the characters wholly in it, and whether the key ended */
#define AT_MASK (((Py_ssize_t)1 << 48) - 1)
#define AT(item) ((item).at & AT_MASK)
#define USED(item) (((item).at >> 48) & 0xF)
#define ENDED(item) (((item).at >> 52) & 0x1)

#define MAX_LEVELS 32
#define SMALL_RUN 12

/* the number of key from character d: its UTF-8 bytes, most significant first, 0 past
 * its end; *used: the characters wholly in it; *ended: whether the key ended in it */
static uint64_t
prefix_of(PyObject *key, Py_ssize_t d, Py_ssize_t *used, int *ended)
{
    Py_ssize_t len = PyUnicode_GET_LENGTH(key), i = d, whole = 0;
    int kind = PyUnicode_KIND(key);
    const void *data = PyUnicode_DATA(key);
    uint64_t pre = 0;
    int room = 8;  /* (bytes of the number not yet written) */
    while (room > 0 && i < len) {
        Py_UCS4 ch = PyUnicode_READ(kind, data, i++);
        unsigned char u[4];
        int n;
        if (ch < 0x80) {
            u[0] = (unsigned char)ch;
            n = 1;
        }
        else if (ch < 0x800) {
            u[0] = (unsigned char)(0xC0 | (ch >> 6));
            u[1] = (unsigned char)(0x80 | (ch & 0x3F));
            n = 2;
        }
        else if (ch < 0x10000) {
            u[0] = (unsigned char)(0xE0 | (ch >> 12));
            u[1] = (unsigned char)(0x80 | ((ch >> 6) & 0x3F));
            u[2] = (unsigned char)(0x80 | (ch & 0x3F));
            n = 3;
        }
        else {
            u[0] = (unsigned char)(0xF0 | (ch >> 18));
            u[1] = (unsigned char)(0x80 | ((ch >> 12) & 0x3F));
            u[2] = (unsigned char)(0x80 | ((ch >> 6) & 0x3F));
            u[3] = (unsigned char)(0x80 | (ch & 0x3F));
            n = 4;
        }
        int j = 0;
        for (; j < n && room > 0; j++, room--)
            pre |= (uint64_t)u[j] << (8 * (room - 1));
        whole += j == n;  /* (a character cut short is read whole at the next level) */
    }
    *ended = i >= len && room > 0;
    *used = whole;
    return pre;
}

/* the items sorted stably by ``pre``: LSD radix, 8 bits a pass, a pass skipped where
 * every item has the same byte; ``tmp`` as long as ``items`` */
static void
radix_sort(SortItem *items, SortItem *tmp, Py_ssize_t n)
{
    Py_ssize_t counts[8][256];
    memset(counts, 0, sizeof(counts));
    for (Py_ssize_t i = 0; i < n; i++) {
        uint64_t pre = items[i].pre;
        for (int b = 0; b < 8; b++)
            counts[b][(pre >> (8 * b)) & 0xFF]++;
    }
    SortItem *from = items, *to = tmp;
    for (int b = 0; b < 8; b++) {
        Py_ssize_t *c = counts[b];
        if (c[(from[0].pre >> (8 * b)) & 0xFF] == n)
            continue;  /* (one byte value for all) */
        Py_ssize_t sum = 0;
        for (int v = 0; v < 256; v++) {
            Py_ssize_t here = c[v];
            c[v] = sum;
            sum += here;
        }
        for (Py_ssize_t i = 0; i < n; i++)
            to[c[(from[i].pre >> (8 * b)) & 0xFF]++] = from[i];
        SortItem *t = from;
        from = to;
        to = t;
    }
    if (from != items)
        memcpy(items, from, (size_t)n * sizeof(SortItem));
}

/* the key of a before the key of b, whole, ties by position (stable) */
static int
whole_less(PyObject **keys, const SortItem *a, const SortItem *b)
{
    PyObject *x = keys[AT(*a)], *y = keys[AT(*b)];
    int c = x == y ? 0 : PyUnicode_Compare(x, y);  /* (exact str: no error) */
    return c < 0 || (c == 0 && AT(*a) < AT(*b));
}

/* a stable merge sort of items by whole key; ``tmp`` as long as ``items``. In order
 * already (a run of equal keys, sorted input): one comparison per item */
static void
merge_sort(PyObject **keys, SortItem *items, SortItem *tmp, Py_ssize_t n)
{
    if (n <= SMALL_RUN) {
        for (Py_ssize_t i = 1; i < n; i++) {
            SortItem x = items[i];
            Py_ssize_t j = i;
            while (j > 0 && whole_less(keys, &x, &items[j - 1])) {
                items[j] = items[j - 1];
                j--;
            }
            items[j] = x;
        }
        return;
    }
    Py_ssize_t half = n / 2;
    merge_sort(keys, items, tmp, half);
    merge_sort(keys, items + half, tmp + half, n - half);
    if (!whole_less(keys, &items[half], &items[half - 1]))
        return;  /* (already in order) */
    Py_ssize_t i = 0, j = half, k = 0;
    while (i < half && j < n)
        tmp[k++] = whole_less(keys, &items[j], &items[i]) ? items[j++] : items[i++];
    while (i < half)
        tmp[k++] = items[i++];
    while (j < n)
        tmp[k++] = items[j++];
    memcpy(items, tmp, (size_t)n * sizeof(SortItem));
}

/* the characters every key of items shares from character d on */
static Py_ssize_t
common_prefix(PyObject **keys, const SortItem *items, Py_ssize_t n, Py_ssize_t d)
{
    PyObject *first = keys[AT(items[0])];
    int fk = PyUnicode_KIND(first);
    const void *fd = PyUnicode_DATA(first);
    Py_ssize_t lcp = PyUnicode_GET_LENGTH(first) - d;
    for (Py_ssize_t i = 1; i < n && lcp > 0; i++) {
        PyObject *key = keys[AT(items[i])];
        Py_ssize_t len = PyUnicode_GET_LENGTH(key) - d, j = 0;
        if (len < lcp)
            lcp = len;
        if (key == first)
            continue;
        int kk = PyUnicode_KIND(key);
        const void *kd = PyUnicode_DATA(key);
        if (kk == fk && memcmp((const char *)fd + d * fk, (const char *)kd + d * kk,
                               (size_t)(lcp * fk)) == 0)
            continue;  /* (the whole of it shared: one memcmp) */
        while (j < lcp && PyUnicode_READ(fk, fd, d + j) == PyUnicode_READ(kk, kd, d + j))
            j++;
        lcp = j;
    }
    return lcp > 0 ? lcp : 0;
}

/* items (positions into keys) sorted by their keys from character d on, the characters
 * before d being equal among them; stable */
static void
sort_from(PyObject **keys, SortItem *items, SortItem *tmp, Py_ssize_t n, Py_ssize_t d,
          int level)
{
    if (n <= SMALL_RUN || level >= MAX_LEVELS) {
        merge_sort(keys, items, tmp, n);
        return;
    }
    if (level > 0)  /* (a tie: skip what its keys all share, in one pass) */
        d += common_prefix(keys, items, n, d);
    Py_ssize_t used;
    int ended;
    for (Py_ssize_t i = 0; i < n; i++) {
        Py_ssize_t at = AT(items[i]);
        if (i + PREFETCH_AHEAD < n)
            prefetch_object(keys[AT(items[i + PREFETCH_AHEAD])]);
        items[i].pre = prefix_of(keys[at], d, &used, &ended);
        items[i].at = at | (used << 48) | ((Py_ssize_t)ended << 52);
    }
    radix_sort(items, tmp, n);
    Py_ssize_t start = 0;
    for (Py_ssize_t i = 1; i <= n; i++) {
        if (i < n && items[i].pre == items[start].pre)
            continue;
        if (i - start > 1) {
            /* a tie: the same leading characters, read on after them; or, if a key
             * ended within these 8 bytes, keys that are equal or go on with NULs
             * (whole comparisons: NULs are rare in text) */
            Py_ssize_t go_used = USED(items[start]);
            int any_ended = 0;
            for (Py_ssize_t j = start; j < i && !any_ended; j++)
                any_ended = (int)ENDED(items[j]);
            if (any_ended || go_used < 1)
                merge_sort(keys, items + start, tmp + start, i - start);
            else
                sort_from(keys, items + start, tmp + start, i - start, d + go_used,
                          level + 1);
        }
        start = i;
    }
}

/* the order of the list ``keys`` (all exact str), as sorted() would put them; NULL with
 * an error set (MemoryError), or NULL with none when an item is not an exact str */
static SortItem *
str_sort_items(PyObject *keys, Py_ssize_t *n_out)
{
    Py_ssize_t n = PyList_GET_SIZE(keys);
    *n_out = n;
    if ((size_t)n > PY_SSIZE_T_MAX / (2 * sizeof(SortItem))) {
        PyErr_NoMemory();
        return NULL;
    }
    if (n > AT_MASK)
        return NULL;  /* (past what an item's index holds: sorted() does it) */
    PyObject **items = ((PyListObject *)keys)->ob_item;
    for (Py_ssize_t i = 0; i < n; i++) {
        if (i + PREFETCH_AHEAD < n)
            prefetch_object(items[i + PREFETCH_AHEAD]);
        if (!PyUnicode_CheckExact(items[i]))
            return NULL;
#if PY_VERSION_HEX < 0x030C0000
        if (PyUnicode_READY(items[i]) < 0)
            return NULL;
#endif
    }
    /* (no Python code runs from here on, and nothing the collector could be started
     * by is allocated: the list cannot change under the sort) */
    SortItem *buf = PyMem_Malloc((size_t)(n ? 2 * n : 1) * sizeof(SortItem));
    if (buf == NULL) {
        PyErr_NoMemory();
        return NULL;
    }
    for (Py_ssize_t i = 0; i < n; i++)
        buf[i].at = i;
    /* a list in order already is kept, and one in strictly descending order reversed
     * (as sorted() finds them, in one pass) */
    Py_ssize_t up = 1, down = 1;
    while (up < n && (items[up] == items[up - 1] ||
                      PyUnicode_Compare(items[up - 1], items[up]) <= 0))
        up++;
    if (up == 1)
        while (down < n && items[down] != items[down - 1] &&
               PyUnicode_Compare(items[down - 1], items[down]) > 0)
            down++;
    if (up < n && down == n)
        for (Py_ssize_t i = 0; i < n; i++)
            buf[i].at = n - 1 - i;
    else if (up < n)
        sort_from(items, buf, buf + n, n, 0, 0);
    return buf;
}

PyDoc_STRVAR(sort_strs_doc,
"sort_strs(keys) -> list or None\n\n"
"sorted(keys) of a list whose items are all exact str (None if one is not): the same\n"
"list, found by sorting numbers made of each key's first characters and comparing\n"
"only the keys whose numbers tie.");

static PyObject *
sort_strs(PyObject *module, PyObject *keys)
{
    if (!PyList_CheckExact(keys)) {
        PyErr_SetString(PyExc_TypeError, "sort_strs takes a list");
        return NULL;
    }
    /* (the result's list made first: making it may start the collector, whose
     * finalizers may change ``keys``; nothing after it does) */
    PyObject *out = PyList_New(PyList_GET_SIZE(keys));
    if (out == NULL)
        return NULL;
    Py_ssize_t n;
    SortItem *order = str_sort_items(keys, &n);
    if (order == NULL || n != PyList_GET_SIZE(out)) {
        PyMem_Free(order);
        Py_DECREF(out);
        if (PyErr_Occurred())
            return NULL;
        Py_RETURN_NONE;  /* (not all exact str, or changed: sorted() does it) */
    }
    PyObject **items = ((PyListObject *)keys)->ob_item;
    for (Py_ssize_t i = 0; i < n; i++) {
        PyObject *k = items[AT(order[i])];
        Py_INCREF(k);
        PyList_SET_ITEM(out, i, k);
    }
    PyMem_Free(order);
    return out;
}

PyDoc_STRVAR(str_order_doc,
"str_order(keys) -> list or None\n\n"
"sorted(range(len(keys)), key=keys.__getitem__) of a list whose items are all exact\n"
"str (None if one is not): each key's index, in the keys' order, equal keys in the\n"
"order of their indexes.");

static PyObject *
str_order(PyObject *module, PyObject *keys)
{
    if (!PyList_CheckExact(keys)) {
        PyErr_SetString(PyExc_TypeError, "str_order takes a list");
        return NULL;
    }
    Py_ssize_t n;
    SortItem *order = str_sort_items(keys, &n);
    if (order == NULL) {
        if (PyErr_Occurred())
            return NULL;
        Py_RETURN_NONE;
    }
    PyObject *out = PyList_New(n);
    for (Py_ssize_t i = 0; out != NULL && i < n; i++) {
        PyObject *at = PyLong_FromSsize_t(AT(order[i]));
        if (at == NULL)
            Py_CLEAR(out);
        else
            PyList_SET_ITEM(out, i, at);
    }
    PyMem_Free(order);
    return out;
}

/* -- the broker's event log: a turn's noted commits, packed (observe/events.py) ------ */

#define NOTE 9        /* items of a noted commit: job, kind, index, attempt identifier,
                       * worker, secs, records, bytes, bytes out */
#define NOTE_ROW 50   /* a packed commit: struct "=qQdqqqH" (index, attempt, secs,
                       * records, bytes, bytes out, its worker's place in the run's
                       * names, or'ed with NOTE_INT_SECS when its run time is an int) */
#define NOTE_PLACES 0x8000
#define NOTE_INT_SECS 0x8000

typedef struct {
    Py_ssize_t count;             /* its commits (their rows follow the run before's) */
    PyObject *job, *kind;         /* held (strong) */
    long long sums[3];            /* records, bytes, bytes out */
    Py_ssize_t workers, nworkers; /* its workers: wtab[workers : workers + nworkers] */
} NoteRun;

static int
same_str(PyObject *a, PyObject *b)
{
    return a == b || PyUnicode_Compare(a, b) == 0;
}

/* a non-negative exact int that fits a long long, into *out; 0 if it is not one */
static int
count_of(PyObject *v, long long *out)
{
    if (!PyLong_CheckExact(v))
        return 0;
    int overflow;
    long long x = PyLong_AsLongLongAndOverflow(v, &overflow);
    if (overflow || x < 0)
        return 0;
    *out = x;
    return 1;
}

/* the keys of a report's statistics (interned at the module's start) */
static PyObject *key_records, *key_bytes, *key_secs;

/* One noted commit checked and packed into ``row`` and its run: 1, or 0 when one of its
 * values is not of the usual kind. Makes no Python object and runs no Python code (see
 * pack_notes). ``report``: its values are a report's, whose run time the log reads as
 * ``secs or 0`` (a note's is read as it is). */
static int
note_one(PyObject *job, PyObject *kind, PyObject *index_obj, PyObject *attempt_obj,
         PyObject *worker, PyObject *secs, PyObject *records, PyObject *nbytes,
         long long out, int report, NoteRun *runs, Py_ssize_t *nruns, PyObject **wtab,
         Py_ssize_t *nw, char *row)
{
    long long index, counts[3];
    unsigned long long attempt;
    double s;
    int int_secs = 0;  /* the run time an int (read back as one) */
    if (job == NULL || kind == NULL || secs == NULL || records == NULL || nbytes == NULL ||
            !PyUnicode_CheckExact(job) || !PyUnicode_CheckExact(kind) ||
            !PyUnicode_CheckExact(worker) || PyUnicode_GET_LENGTH(worker) == 0 ||
            !count_of(index_obj, &index) || !PyLong_CheckExact(attempt_obj) ||
            !count_of(records, &counts[0]) || !count_of(nbytes, &counts[1]) || out < 0)
        return 0;
    counts[2] = out;
    /* (unsigned long where it has 64 bits: its conversion is a loop over the int's
     * digits, the unsigned long long one a general byte-array copy) */
#if ULONG_MAX >= 0xFFFFFFFFFFFFFFFFull
    attempt = PyLong_AsUnsignedLong(attempt_obj);
#else
    attempt = PyLong_AsUnsignedLongLong(attempt_obj);
#endif
    if (attempt == (unsigned long long)-1 && PyErr_Occurred()) {
        PyErr_Clear();
        return 0;
    }
    if (PyFloat_CheckExact(secs)) {
        s = PyFloat_AS_DOUBLE(secs);
        if (report && s == 0.0) {  /* (``0.0 or 0``, and ``-0.0 or 0``: the int 0) */
            s = 0.0;
            int_secs = 1;
        }
    }
    else if (PyLong_CheckExact(secs)) {
        int overflow;
        long long whole = PyLong_AsLongLongAndOverflow(secs, &overflow);
        /* (an int a double holds exactly, to be read back as the same int) */
        if (overflow || whole > (1LL << 53) || whole < -(1LL << 53))
            return 0;
        s = (double)whole;
        int_secs = 1;
    }
    else if (report && secs == Py_None) {  /* (``None or 0``) */
        s = 0.0;
        int_secs = 1;
    }
    else
        return 0;
    NoteRun *run = *nruns ? &runs[*nruns - 1] : NULL;
    if (run == NULL || !same_str(run->job, job) || !same_str(run->kind, kind)) {
        run = &runs[(*nruns)++];
        run->count = 0;
        run->job = job;
        run->kind = kind;
        Py_INCREF(job);
        Py_INCREF(kind);
        run->sums[0] = run->sums[1] = run->sums[2] = 0;
        run->workers = *nw;
        run->nworkers = 0;
    }
    /* its worker's place in the run's names: mostly the last one added (a DONE's
     * reports are one worker's), else looked for */
    Py_ssize_t w = run->nworkers - 1;
    if (w < 0 || !same_str(wtab[run->workers + w], worker)) {
        w = 0;
        while (w < run->nworkers && !same_str(wtab[run->workers + w], worker))
            w++;
    }
    if (w == run->nworkers) {
        if (w >= NOTE_PLACES)
            return 0;
        Py_INCREF(worker);
        wtab[(*nw)++] = worker;
        run->nworkers++;
    }
    for (int k = 0; k < 3; k++)
        if (__builtin_add_overflow(run->sums[k], counts[k], &run->sums[k]))
            return 0;
    uint16_t place = (uint16_t)(w | (int_secs ? NOTE_INT_SECS : 0));
    memcpy(row, &index, 8);
    memcpy(row + 8, &attempt, 8);
    memcpy(row + 16, &s, 8);
    memcpy(row + 24, counts, 24);
    memcpy(row + 48, &place, 2);
    run->count++;
    return 1;
}

/* The usual statistics of a report, {records, bytes, secs} and nothing else, into
 * ``got`` in that order: 1, or 0 if ``stats`` holds other keys (or fewer). Its entries
 * are gone over, not looked up: a decoded report's keys are not the interned ones, and
 * three lookups that compare strings cost more than one pass over three entries. No
 * Python code runs (exact str keys only). */
static int
report_stats(PyObject *stats, PyObject **got)
{
    if (PyDict_GET_SIZE(stats) != 3)
        return 0;
    PyObject *keys[3] = {key_records, key_bytes, key_secs};
    got[0] = got[1] = got[2] = NULL;
    Py_ssize_t pos = 0;
    PyObject *key, *value;
    while (PyDict_Next(stats, &pos, &key, &value)) {
        if (!PyUnicode_CheckExact(key))
            return 0;
        /* (a str of ASCII characters only is always stored compact ASCII: one that
         * is not cannot equal these keys) */
        int which = -1;
        Py_ssize_t len = PyUnicode_GET_LENGTH(key);
        for (int k = 0; k < 3 && which < 0; k++)
            if (key == keys[k] || (PyUnicode_IS_COMPACT_ASCII(key) &&
                                   len == PyUnicode_GET_LENGTH(keys[k]) &&
                                   memcmp(PyUnicode_DATA(key), PyUnicode_DATA(keys[k]),
                                          (size_t)len) == 0))
                which = k;
        if (which < 0 || got[which] != NULL)
            return 0;
        got[which] = value;
    }
    return got[0] != NULL && got[1] != NULL && got[2] != NULL;
}

PyDoc_STRVAR(pack_notes_doc,
"pack_notes(noted, reports) -> list or None\n\n"
"The commits the broker loop noted, as runs of one job and kind: [(job, kind, n,\n"
"records, bytes, bytes out, workers, rows)], the three sums those of the run's\n"
"commits, ``workers`` the run's distinct worker names and ``rows`` bytes of struct\n"
"\"=qQdqqqH\" per commit (index, attempt, secs as a float, the three counts, the place\n"
"of its worker in ``workers``, or'ed with 0x8000 when its secs reads as an int: an\n"
"int, or a report's ``secs or 0`` of 0.0 or None). ``noted`` is a list of NOTE = 9\n"
"items an entry: a\n"
"commit (job, kind, index, attempt identifier, worker, secs, records, bytes, bytes\n"
"out), or, when its first item is ``reports``, a run of a DONE's reports as the\n"
"broker received them (reports, worker, results, first, count, blobs, ...): reports\n"
"first to first + count of the list ``results``, each [job, kind, index, attempt,\n"
"{records, bytes, secs}, ...] (those three keys only), whose outputs are\n"
"``blobs[first:first + count]``.\n"
"None when an item is not of the usual kind (the caller reads them itself): job,\n"
"kind and worker exact str (the worker not empty), index and counts exact ints in\n"
"the int64 range and not negative, the attempt one in the uint64 range, secs an exact\n"
"float or an int of at most 2**53 either way (or None in a report), a run's outputs\n"
"exact bytes, no sum past int64, fewer than 32,768 workers in a run.\n"
"``noted`` is left as it is.");

static PyObject *
pack_notes(PyObject *module, PyObject *const *args, Py_ssize_t nargs)
{
    if (arity(nargs, 2, "pack_notes takes noted and reports") < 0)
        return NULL;
    PyObject *noted = args[0], *mark = args[1];
    if (!PyList_CheckExact(noted)) {
        PyErr_SetString(PyExc_TypeError, "pack_notes takes a list");
        return NULL;
    }
    Py_ssize_t size = PyList_GET_SIZE(noted);
    if (size == 0 || size % NOTE)
        Py_RETURN_NONE;
    PyObject **items = ((PyListObject *)noted)->ob_item;
    /* the commits: a run of reports is checked here, its reports counted */
    Py_ssize_t n = 0;
    for (Py_ssize_t e = 0; e < size; e += NOTE) {
        if (items[e] != mark) {
            n++;
            continue;
        }
        PyObject *results = items[e + 2], *blobs = items[e + 5];
        Py_ssize_t first, count;
        if (!PyList_CheckExact(results) || !PyTuple_CheckExact(blobs) ||
                !PyLong_CheckExact(items[e + 3]) || !PyLong_CheckExact(items[e + 4]))
            Py_RETURN_NONE;
        first = PyLong_AsSsize_t(items[e + 3]);
        count = PyLong_AsSsize_t(items[e + 4]);
        if (PyErr_Occurred()) {
            PyErr_Clear();
            Py_RETURN_NONE;
        }
        if (first < 0 || count < 0 || first > PyList_GET_SIZE(results) - count ||
                first > PyTuple_GET_SIZE(blobs) - count)
            Py_RETURN_NONE;
        n += count;
    }
    if (n == 0)
        Py_RETURN_NONE;
    /* first pass: checked, summed and packed into C memory, no Python object made (so
     * nothing starts the collector, whose finalizers could change ``noted``, or the
     * reports); the names each run needs are held before the second pass makes
     * objects */
    char *rows = PyMem_Malloc((size_t)n * NOTE_ROW);
    NoteRun *runs = PyMem_Malloc((size_t)n * sizeof(NoteRun));
    PyObject **wtab = PyMem_Malloc((size_t)n * sizeof(PyObject *));
    Py_ssize_t nruns = 0, nw = 0, at = 0;
    PyObject *out = NULL;
    int usual = 1;
    if (rows == NULL || runs == NULL || wtab == NULL) {
        PyErr_NoMemory();
        goto done;
    }
    for (Py_ssize_t e = 0; e < size && usual; e += NOTE) {
        PyObject **f = items + e;
        if (f[0] != mark) {
            long long sent;
            if (!count_of(f[8], &sent))
                sent = -1;  /* (refused by note_one) */
            usual = note_one(f[0], f[1], f[2], f[3], f[4], f[5], f[6], f[7], sent, 0, runs,
                             &nruns, wtab, &nw, rows + at * NOTE_ROW);
            at++;
            continue;
        }
        PyObject *worker = f[1];
        PyObject **reports = ((PyListObject *)f[2])->ob_item;
        PyObject **blobs = ((PyTupleObject *)f[5])->ob_item;
        Py_ssize_t first = PyLong_AsSsize_t(f[3]), count = PyLong_AsSsize_t(f[4]);
        for (Py_ssize_t k = first; k < first + count && usual; k++) {
            PyObject *item = reports[k], *stats;
            if (!PyList_CheckExact(item) || PyList_GET_SIZE(item) < 5 ||
                    !PyDict_CheckExact(stats = PyList_GET_ITEM(item, 4)) ||
                    !PyBytes_CheckExact(blobs[k])) {
                usual = 0;
                break;
            }
            PyObject **r = ((PyListObject *)item)->ob_item;
            PyObject *got[3];
            usual = report_stats(stats, got);
            if (usual)
                usual = note_one(r[0], r[1], r[2], r[3], worker, got[2], got[0], got[1],
                                 PyBytes_GET_SIZE(blobs[k]), 1, runs, &nruns, wtab, &nw,
                                 rows + at * NOTE_ROW);
            at++;
        }
    }
    if (!usual) {
        out = Py_None;
        Py_INCREF(out);
        goto done;
    }
    out = PyList_New(nruns);
    Py_ssize_t from = 0;
    for (Py_ssize_t r = 0; out != NULL && r < nruns; r++) {
        NoteRun *one = &runs[r];
        PyObject *workers = PyTuple_New(one->nworkers);
        PyObject *packed = PyBytes_FromStringAndSize(rows + from * NOTE_ROW,
                                                     one->count * NOTE_ROW);
        from += one->count;
        PyObject *item = NULL;
        if (workers != NULL && packed != NULL) {
            for (Py_ssize_t w = 0; w < one->nworkers; w++) {
                PyObject *name = wtab[one->workers + w];
                Py_INCREF(name);
                PyTuple_SET_ITEM(workers, w, name);
            }
            item = Py_BuildValue("(OOnLLLOO)", one->job, one->kind, one->count,
                                 one->sums[0], one->sums[1], one->sums[2], workers, packed);
        }
        Py_XDECREF(workers);
        Py_XDECREF(packed);
        if (item == NULL)
            Py_CLEAR(out);
        else
            PyList_SET_ITEM(out, r, item);
    }
done:
    for (Py_ssize_t r = 0; runs != NULL && r < nruns; r++) {
        Py_DECREF(runs[r].job);
        Py_DECREF(runs[r].kind);
    }
    for (Py_ssize_t w = 0; w < nw; w++)
        Py_DECREF(wtab[w]);
    PyMem_Free(rows);
    PyMem_Free(runs);
    PyMem_Free(wtab);
    return out;
}

PyDoc_STRVAR(attempt_ids_doc,
"attempt_ids(items) -> bytes\n\n"
"The attempt identifiers of a TASKS message's items (``item[2]`` of each, a list whose\n"
"third element is an int from 0 to 2**64 - 1), as native uint64 values one after the\n"
"other: what ``array(UINT64, ...)`` makes its items of (observe/events.py keeps them so).\n"
"TypeError or OverflowError for anything else.");

static PyObject *
attempt_ids(PyObject *self, PyObject *items)
{
    if (!PyList_CheckExact(items)) {
        PyErr_SetString(PyExc_TypeError, "attempt_ids: items must be a list");
        return NULL;
    }
    Py_ssize_t n = PyList_GET_SIZE(items);
    /* (nothing below runs Python code: exact lists and ints only, so the list cannot
       change while it is read) */
    PyObject *out = PyBytes_FromStringAndSize(NULL, n * (Py_ssize_t)sizeof(uint64_t));
    if (out == NULL)
        return NULL;
    char *to = PyBytes_AS_STRING(out);
    for (Py_ssize_t i = 0; i < n; i++) {
        PyObject *item = PyList_GET_ITEM(items, i);
        if (!PyList_CheckExact(item) || PyList_GET_SIZE(item) < 3
                || !PyLong_CheckExact(PyList_GET_ITEM(item, 2))) {
            PyErr_Format(PyExc_TypeError, "attempt_ids: item %zd is not a list whose third "
                         "element is an int", i);
            Py_DECREF(out);
            return NULL;
        }
        unsigned long long id = PyLong_AsUnsignedLongLong(PyList_GET_ITEM(item, 2));
        if (id == (unsigned long long)-1 && PyErr_Occurred()) {
            Py_DECREF(out);
            return NULL;
        }
        uint64_t v = (uint64_t)id;
        memcpy(to + i * (Py_ssize_t)sizeof(uint64_t), &v, sizeof v);
    }
    return out;
}

PyDoc_STRVAR(pack_splits_doc,
"pack_splits(records, n) -> list of bytes, or None\n\n"
"A submission's in-memory splits: the list ``records`` cut into ``n`` contiguous pieces\n"
"of near-equal length (1 <= n <= len(records); the first len % n pieces one longer, as\n"
"inputs.chunk cuts them), each packed as ``pack([[k, v] for k, v in piece])`` packs it.\n"
"None if an item is not an exact tuple of two, or a key or value is of a type not\n"
"written here: the caller then does it all in Python, which checks and refuses.");

static PyObject *
pack_splits(PyObject *module, PyObject *const *args, Py_ssize_t nargs)
{
    if (arity(nargs, 2, "pack_splits takes records and n") < 0)
        return NULL;
    PyObject *records = args[0];
    if (!PyList_CheckExact(records)) {
        PyErr_SetString(PyExc_TypeError, "pack_splits: records must be a list");
        return NULL;
    }
    Py_ssize_t len = PyList_GET_SIZE(records);
    Py_ssize_t n = PyLong_AsSsize_t(args[1]);
    if (n == -1 && PyErr_Occurred())
        return NULL;
    if (n < 1 || n > len) {
        PyErr_SetString(PyExc_ValueError, "pack_splits: n must be 1 to len(records)");
        return NULL;
    }
    Py_ssize_t q = len / n, longer = len % n;
    Py_ssize_t *ends = PyMem_Malloc((size_t)n * sizeof(Py_ssize_t));
    if (ends == NULL)
        return PyErr_NoMemory();
    Buf b = {NULL, 0, 0};
    PyObject *out = NULL;
    int r = 0;
    Py_ssize_t i = 0;
    /* (no Python code runs in this pass: exact types only, so the list cannot change) */
    for (Py_ssize_t c = 0; c < n && r == 0; c++) {
        Py_ssize_t size = q + (c < longer);
        r = put_array_head(&b, size);
        for (Py_ssize_t j = 0; j < size && r == 0; j++, i++) {
            PyObject *item = PyList_GET_ITEM(records, i);
            if (!PyTuple_CheckExact(item) || PyTuple_GET_SIZE(item) != 2) {
                r = 1;
                break;
            }
            if ((r = put_head(&b, 0x92, 0, 0)) == 0 &&
                    (r = put_item(&b, PyTuple_GET_ITEM(item, 0))) == 0)
                r = put_item(&b, PyTuple_GET_ITEM(item, 1));
        }
        ends[c] = (Py_ssize_t)b.len;
    }
    if (r != 0)
        goto done;
    /* (the list made first: an allocation that starts the collector may run finalizers,
       and nothing read from ``records`` is needed after this point) */
    out = PyList_New(n);
    Py_ssize_t start = 0;
    for (Py_ssize_t c = 0; out != NULL && c < n; c++) {
        PyObject *blob = PyBytes_FromStringAndSize((const char *)b.p + start,
                                                   ends[c] - start);
        if (blob == NULL)
            Py_CLEAR(out);
        else
            PyList_SET_ITEM(out, c, blob);
        start = ends[c];
    }
done:
    PyMem_Free(b.p);
    PyMem_Free(ends);
    if (r > 0 && !PyErr_Occurred())
        Py_RETURN_NONE;
    return out;
}

/* -- part files: JSON lines written from two columns (client/output.py) ------------- */

/* the bytes of ASCII that JSON writes escaped (ensure_ascii=False escapes nothing
 * else): the length of each one's escape (0: none), and the letter after the backslash
 * of a short escape (0: written \u00XX) */
static unsigned char json_escaped[128];
static char json_short[128];

static void
init_json_table(void)
{
    static const char shorts[] = "\"\"\\\\\nn\rr\tt\bb\ff";  /* (byte, letter) pairs */
    for (int c = 0; c < 0x20; c++)
        json_escaped[c] = 6;
    for (size_t i = 0; i + 1 < sizeof(shorts); i += 2) {
        json_escaped[(unsigned char)shorts[i]] = 2;
        json_short[(unsigned char)shorts[i]] = shorts[i + 1];
    }
}

/* the escape of an ASCII byte that needs one, at o; returns the end of what was written */
static unsigned char *
put_escape(unsigned char *o, unsigned char c)
{
    static const char hex[] = "0123456789abcdef";
    *o++ = '\\';
    if (json_short[c]) {
        *o++ = (unsigned char)json_short[c];
        return o;
    }
    memcpy(o, "u00", 3);
    o[3] = (unsigned char)hex[c >> 4];
    o[4] = (unsigned char)hex[c & 0xF];
    return o + 5;
}

static const uint64_t ONES = 0x0101010101010101ULL, HIGHS = 0x8080808080808080ULL;

/* whether any of 8 bytes is below 0x20, '"' or '\\' (exact: each test is zero-byte
 * detection, whose borrows only reach past a byte that matched) */
static inline int
json_special8(uint64_t x)
{
    uint64_t q = x ^ (ONES * '"'), bs = x ^ (ONES * '\\');
    return (((x - ONES * 0x20) & ~x) | ((q - ONES) & ~q) | ((bs - ONES) & ~bs)) & HIGHS
        ? 1 : 0;
}

/* one character as json.dumps(ensure_ascii=False) writes it, in UTF-8; 1: a lone
 * surrogate (its text has no UTF-8: left to the Python path, whose write raises) */
static int
put_json_char(Buf *b, Py_UCS4 ch)
{
    unsigned char *o;
    if (buf_grow(b, 6) < 0)
        return -1;
    o = b->p + b->len;
    if (ch < 0x80) {
        if (!json_escaped[ch]) {
            o[0] = (unsigned char)ch;
            b->len += 1;
        }
        else
            b->len += (size_t)(put_escape(o, (unsigned char)ch) - o);
        return 0;
    }
    if (ch < 0x800) {
        o[0] = (unsigned char)(0xC0 | (ch >> 6));
        o[1] = (unsigned char)(0x80 | (ch & 0x3F));
        b->len += 2;
        return 0;
    }
    if (ch >= 0xD800 && ch <= 0xDFFF)
        return 1;
    if (ch < 0x10000) {
        o[0] = (unsigned char)(0xE0 | (ch >> 12));
        o[1] = (unsigned char)(0x80 | ((ch >> 6) & 0x3F));
        o[2] = (unsigned char)(0x80 | (ch & 0x3F));
        b->len += 3;
        return 0;
    }
    o[0] = (unsigned char)(0xF0 | (ch >> 18));
    o[1] = (unsigned char)(0x80 | ((ch >> 12) & 0x3F));
    o[2] = (unsigned char)(0x80 | ((ch >> 6) & 0x3F));
    o[3] = (unsigned char)(0x80 | (ch & 0x3F));
    b->len += 4;
    return 0;
}

static int
put_raw(Buf *b, const char *s, size_t n)
{
    if (buf_grow(b, n) < 0)
        return -1;
    memcpy(b->p + b->len, s, n);
    b->len += n;
    return 0;
}

/* one item's JSON, as json.dumps([item], ensure_ascii=False) writes it inside the
 * brackets; 1: not written here (another type, an int past 64 bits, a lone surrogate) */
static int
put_json(Buf *b, PyObject *o)
{
    if (PyUnicode_CheckExact(o)) {
#if PY_VERSION_HEX < 0x030C0000
        if (PyUnicode_READY(o) < 0)
            return -1;
#endif
        Py_ssize_t len = PyUnicode_GET_LENGTH(o);
        if (buf_grow(b, (size_t)len + 2) < 0)
            return -1;
        b->p[b->len++] = '"';
        if (PyUnicode_IS_ASCII(o)) {
            /* (text needing no escape, the usual case: checked, then copied whole) */
            const unsigned char *s = PyUnicode_1BYTE_DATA(o);
            Py_ssize_t i = 0;
            for (; i + 8 <= len; i += 8) {  /* (eight bytes at a time) */
                uint64_t x;
                memcpy(&x, s + i, 8);
                if (json_special8(x))
                    break;
            }
            while (i < len && !json_escaped[s[i]])
                i++;
            memcpy(b->p + b->len, s, (size_t)i);
            b->len += (size_t)i;
            for (; i < len; i++) {
                int r = put_json_char(b, s[i]);
                if (r != 0)
                    return r;
            }
        }
        else {
            int kind = PyUnicode_KIND(o);
            const void *data = PyUnicode_DATA(o);
            for (Py_ssize_t i = 0; i < len; i++) {
                int r = put_json_char(b, PyUnicode_READ(kind, data, i));
                if (r != 0)
                    return r;
            }
        }
        if (buf_grow(b, 1) < 0)
            return -1;
        b->p[b->len++] = '"';
        return 0;
    }
    if (PyLong_CheckExact(o)) {
        int overflow = 0;
        long long v = PyLong_AsLongLongAndOverflow(o, &overflow);
        if (v == -1 && PyErr_Occurred())
            return -1;
        if (overflow)
            return 1;
        char digits[24];
        int n = snprintf(digits, sizeof(digits), "%lld", v);
        return put_raw(b, digits, (size_t)n);
    }
    if (o == Py_None)
        return put_raw(b, "null", 4);
    if (o == Py_True)
        return put_raw(b, "true", 4);
    if (o == Py_False)
        return put_raw(b, "false", 5);
    if (PyFloat_CheckExact(o)) {
        double d = PyFloat_AS_DOUBLE(o);
        if (!isfinite(d))
            return isnan(d) ? put_raw(b, "NaN", 3) : d > 0 ? put_raw(b, "Infinity", 8)
                                                            : put_raw(b, "-Infinity", 9);
        char *text = PyOS_double_to_string(d, 'r', 0, Py_DTSF_ADD_DOT_0, NULL);
        if (text == NULL)
            return -1;
        int r = put_raw(b, text, strlen(text));
        PyMem_Free(text);
        return r;
    }
    return 1;
}

PyDoc_STRVAR(json_lines_doc,
"json_lines(keys, values) -> bytes or None\n\n"
"The UTF-8 of ``json.dumps([k, v], ensure_ascii=False) + \"\\n\"`` for each pair of\n"
"``zip(keys, values)`` (two lists or tuples), joined. None if an item is not written\n"
"here (a type other than exact str, int, float, bool or None; an int past 64 bits; a\n"
"str holding a lone surrogate): the caller then encodes them all in Python.");

static PyObject *
json_lines(PyObject *module, PyObject *const *args, Py_ssize_t nargs)
{
    if (arity(nargs, 2, "json_lines takes keys and values") < 0)
        return NULL;
    PyObject *keys = args[0], *values = args[1];
    if (!(PyList_CheckExact(keys) || PyTuple_CheckExact(keys)) ||
            !(PyList_CheckExact(values) || PyTuple_CheckExact(values))) {
        PyErr_SetString(PyExc_TypeError, "json_lines takes two lists or tuples");
        return NULL;
    }
    Buf b = {NULL, 0, 0};
    int r = 0;
    /* (no Python code runs in this loop: exact types only, so neither list can change;
     * its size is read again each time all the same) */
    for (Py_ssize_t i = 0; r == 0 && i < PySequence_Fast_GET_SIZE(keys) &&
             i < PySequence_Fast_GET_SIZE(values); i++) {
        if (i + PREFETCH_AHEAD < PySequence_Fast_GET_SIZE(keys) &&
                i + PREFETCH_AHEAD < PySequence_Fast_GET_SIZE(values)) {
            prefetch_object(PySequence_Fast_GET_ITEM(keys, i + PREFETCH_AHEAD));
            prefetch_object(PySequence_Fast_GET_ITEM(values, i + PREFETCH_AHEAD));
        }
        if ((r = put_raw(&b, "[", 1)) == 0 &&
                (r = put_json(&b, PySequence_Fast_GET_ITEM(keys, i))) == 0 &&
                (r = put_raw(&b, ", ", 2)) == 0 &&
                (r = put_json(&b, PySequence_Fast_GET_ITEM(values, i))) == 0)
            r = put_raw(&b, "]\n", 2);
    }
    PyObject *out = NULL;
    if (r == 0)
        out = PyBytes_FromStringAndSize((const char *)b.p, (Py_ssize_t)b.len);
    PyMem_Free(b.p);
    if (r > 0 && !PyErr_Occurred())
        Py_RETURN_NONE;
    return out;
}

/* -- a plain sort's map output: each partition's sorted run packed (rangesort.py) ---- */

/* a column's items, as put_item writes them, each read some places ahead of its turn
 * (a sorted column's items lie all over memory) */
static int
put_column(Buf *b, PyObject *column)
{
    Py_ssize_t n = PyList_GET_SIZE(column);
    int r = put_array_head(b, n);
    for (Py_ssize_t i = 0; r == 0 && i < PyList_GET_SIZE(column); i++) {
        if (i + PREFETCH_AHEAD < PyList_GET_SIZE(column))
            prefetch_object(PyList_GET_ITEM(column, i + PREFETCH_AHEAD));
        r = put_item(b, PyList_GET_ITEM(column, i));
    }
    return r;
}

PyDoc_STRVAR(pack_columns_doc,
"pack_columns(parts, third) -> list of bytes, or None\n\n"
"``pack([keys, values, third])`` of each ``(keys, values)`` in ``parts`` (a list of\n"
"tuples of two lists of one length), b'' for one of no keys. None if an item is of a\n"
"type not written here (the caller packs them all in Python).");

static PyObject *
pack_columns(PyObject *module, PyObject *const *args, Py_ssize_t nargs)
{
    if (arity(nargs, 2, "pack_columns takes parts and a third item") < 0)
        return NULL;
    PyObject *parts = args[0], *third = args[1];
    if (!PyList_CheckExact(parts)) {
        PyErr_SetString(PyExc_TypeError, "pack_columns takes a list of parts");
        return NULL;
    }
    /* (the result's list made first, then the parts checked: making it may start the
     * collector, whose finalizers may change them; nothing after it runs Python code) */
    Py_ssize_t np = PyList_GET_SIZE(parts);
    PyObject *out = PyList_New(np);
    if (out == NULL)
        return NULL;
    if (PyList_GET_SIZE(parts) != np) {
        Py_DECREF(out);
        PyErr_SetString(PyExc_RuntimeError, "pack_columns: the parts changed during the call");
        return NULL;
    }
    for (Py_ssize_t p = 0; p < np; p++) {
        PyObject *part = PyList_GET_ITEM(parts, p);
        if (!PyTuple_CheckExact(part) || PyTuple_GET_SIZE(part) != 2 ||
                !PyList_CheckExact(PyTuple_GET_ITEM(part, 0)) ||
                !PyList_CheckExact(PyTuple_GET_ITEM(part, 1)) ||
                PyList_GET_SIZE(PyTuple_GET_ITEM(part, 0)) !=
                PyList_GET_SIZE(PyTuple_GET_ITEM(part, 1))) {
            PyErr_SetString(PyExc_TypeError,
                            "pack_columns: a part that is not two lists of one length");
            Py_DECREF(out);
            return NULL;
        }
    }
    Buf b = {NULL, 0, 0};
    int r = 0;
    for (Py_ssize_t p = 0; p < np && r == 0 && p < PyList_GET_SIZE(parts); p++) {
        PyObject *part = PyList_GET_ITEM(parts, p);
        PyObject *keys = PyTuple_GET_ITEM(part, 0), *values = PyTuple_GET_ITEM(part, 1);
        b.len = 0;
        if (PyList_GET_SIZE(keys) > 0 &&
                ((r = put_head(&b, 0x93, 0, 0)) != 0 || (r = put_column(&b, keys)) != 0 ||
                 (r = put_column(&b, values)) != 0 || (r = put_item(&b, third)) != 0))
            break;
        PyObject *blob = PyBytes_FromStringAndSize((const char *)b.p, (Py_ssize_t)b.len);
        if (blob == NULL) {
            r = -1;
            break;
        }
        PyList_SET_ITEM(out, p, blob);
    }
    PyMem_Free(b.p);
    if (r != 0) {
        Py_DECREF(out);
        if (r > 0 && !PyErr_Occurred())
            Py_RETURN_NONE;
        return NULL;
    }
    return out;
}

/* -- a plain sort's reduce: its runs merged from their bytes into JSON lines ---------
 *
 * A plain sort's reduce task gets sorted runs, each ``pack([keys, values, 1])`` of str
 * (rangesort.py), and, when its client keeps no results, writes nothing but their
 * pairs' JSON lines in key order. Decoding them makes two str objects a pair only to
 * sort them and write their text again; here the runs are read where they lie in their
 * bytes and merged by comparing those bytes (UTF-8 compared byte by byte orders text as
 * its code points do, which is how str compares), as Hadoop sorts serialized keys with
 * a raw comparator. Anything but that layout (another type, another encoding of the 1,
 * bytes left over, text that is not valid UTF-8 as Python's decoder takes it, a run out
 * of order) is left to the Python path (None returned), which decodes, sorts and refuses
 * as before: these bytes come from other workers. (A length written in a longer form
 * than it needs is read, as msgpack reads it: the same text either way.)
 */

typedef struct {
    const unsigned char *p;
    Py_ssize_t len;
    uint64_t pre;           /* its first 8 bytes, most significant first (0 past its end):
                             * two keys' numbers that differ order them as their bytes */
} Span;

/* a run, read as it is merged: cursors into its segment's bytes, no table of its pairs
 * (a segment of one-byte strs would otherwise cost tens of bytes of table per byte) */
typedef struct {
    const unsigned char *k, *v;  /* its next key's and next value's msgpack str */
    Span key;                    /* its current key */
    Py_ssize_t left;             /* its pairs not merged yet, the current one included */
} Run;

/* the length of the valid UTF-8 sequence at p (before end), as Python's strict decoder
 * takes it (no overlong forms, no surrogates, nothing past U+10FFFF); 0 if invalid */
static int
utf8_length(const unsigned char *p, const unsigned char *end)
{
    unsigned char c = p[0];
    int n;
    unsigned char lo = 0x80, hi = 0xBF;  /* (the second byte's range) */
    if (c >= 0xC2 && c <= 0xDF)
        n = 2;
    else if (c >= 0xE0 && c <= 0xEF) {
        n = 3;
        if (c == 0xE0)
            lo = 0xA0;
        else if (c == 0xED)
            hi = 0x9F;
    }
    else if (c >= 0xF0 && c <= 0xF4) {
        n = 4;
        if (c == 0xF0)
            lo = 0x90;
        else if (c == 0xF4)
            hi = 0x8F;
    }
    else
        return 0;
    if (end - p < n || p[1] < lo || p[1] > hi)
        return 0;
    for (int i = 2; i < n; i++)
        if (p[i] < 0x80 || p[i] > 0xBF)
            return 0;
    return n;
}

/* a msgpack str's header at *pp (before end): its bytes in *out (and its number), *pp
 * moved past it; 1 if it is not a str or runs past end */
static int
read_head(const unsigned char **pp, const unsigned char *end, Span *out)
{
    const unsigned char *p = *pp;
    if (p >= end)
        return 1;
    unsigned char tag = *p++;
    size_t len;
    if ((tag & 0xE0) == 0xA0)
        len = tag & 0x1F;
    else {
        int w = tag == 0xd9 ? 1 : tag == 0xda ? 2 : tag == 0xdb ? 4 : 0;
        if (w == 0 || end - p < w)
            return 1;
        len = 0;
        for (int i = 0; i < w; i++)
            len = (len << 8) | *p++;
    }
    if ((size_t)(end - p) < len)
        return 1;
    out->p = p;
    out->len = (Py_ssize_t)len;
    uint64_t pre = 0;
    for (size_t i = 0; i < 8; i++)
        pre = (pre << 8) | (i < len ? p[i] : 0);
    out->pre = pre;
    *pp = p + len;
    return 0;
}

/* a msgpack str at *pp, checked: its bytes in *out, the bytes its JSON text adds to
 * them (escapes) added to *extra; 1 if it is not a str, or not valid UTF-8 */
static int
read_str(const unsigned char **pp, const unsigned char *end, Span *out, size_t *extra)
{
    if (read_head(pp, end, out) != 0)
        return 1;
    const unsigned char *s = out->p, *e = out->p + out->len;
    size_t add = 0;
    for (;;) {
        /* eight bytes at a time while they are ASCII needing no escape */
        while (e - s >= 8) {
            uint64_t x;
            memcpy(&x, s, 8);
            if ((x & HIGHS) || json_special8(x))
                break;
            s += 8;
        }
        if (s >= e)
            break;
        if (*s < 0x80) {
            if (json_escaped[*s])
                add += json_escaped[*s] - 1u;  /* (the escape, less the byte itself) */
            s++;
        }
        else {
            int n = utf8_length(s, e);
            if (n == 0)
                return 1;
            s += n;
        }
    }
    *extra += add;
    return 0;
}

/* a msgpack array's length at *pp; -1 if it is not an array */
static Py_ssize_t
read_array(const unsigned char **pp, const unsigned char *end)
{
    const unsigned char *p = *pp;
    if (p >= end)
        return -1;
    unsigned char tag = *p++;
    Py_ssize_t n;
    if ((tag & 0xF0) == 0x90)
        n = tag & 0x0F;
    else if (tag == 0xdc && end - p >= 2) {
        n = ((Py_ssize_t)p[0] << 8) | p[1];
        p += 2;
    }
    else if (tag == 0xdd && end - p >= 4) {
        n = ((Py_ssize_t)p[0] << 24) | ((Py_ssize_t)p[1] << 16) | ((Py_ssize_t)p[2] << 8) | p[3];
        p += 4;
    }
    else
        return -1;
    *pp = p;
    return n;
}

/* the bytes of msgpack's shortest header of a str of n bytes */
static inline size_t
str_head_size(size_t n)
{
    return n < 32 ? 1 : n < 256 ? 2 : n < 65536 ? 3 : 5;
}

/* a str's item as pack() writes it (the shortest header, then its bytes) at o */
static unsigned char *
put_str_item(unsigned char *o, const Span *s)
{
    size_t n = (size_t)s->len;
    if (n < 32)
        *o++ = (unsigned char)(0xA0 | n);
    else if (n < 256) {
        *o++ = 0xd9;
        *o++ = (unsigned char)n;
    }
    else if (n < 65536) {
        *o++ = 0xda;
        put_be(o, n, 2);
        o += 2;
    }
    else {
        *o++ = 0xdb;
        put_be(o, n, 4);
        o += 4;
    }
    memcpy(o, s->p, n);
    return o + n;
}

/* an array's header as pack() writes it (n below 2**32) at o */
static unsigned char *
put_array_item(unsigned char *o, size_t n)
{
    if (n < 16)
        *o++ = (unsigned char)(0x90 | n);
    else if (n < 65536) {
        *o++ = 0xdc;
        put_be(o, n, 2);
        o += 2;
    }
    else {
        *o++ = 0xdd;
        put_be(o, n, 4);
        o += 4;
    }
    return o;
}

static inline int
span_cmp(const Span *a, const Span *b)
{
    if (a->pre != b->pre)
        return a->pre < b->pre ? -1 : 1;
    Py_ssize_t n = a->len < b->len ? a->len : b->len;
    int c = n ? memcmp(a->p, b->p, (size_t)n) : 0;
    return c ? c : (a->len > b->len) - (a->len < b->len);
}

/* run a's current key before run b's (ties: the earlier run first, as a stable sort of
 * the runs one after the other puts them) */
static inline int
run_before(const Run *runs, Py_ssize_t a, Py_ssize_t b)
{
    int c = span_cmp(&runs[a].key, &runs[b].key);
    return c < 0 || (c == 0 && a < b);
}

static void
heap_down(const Run *runs, Py_ssize_t *heap, Py_ssize_t size, Py_ssize_t i)
{
    for (;;) {
        Py_ssize_t l = 2 * i + 1, best = i;
        if (l < size && run_before(runs, heap[l], heap[best]))
            best = l;
        if (l + 1 < size && run_before(runs, heap[l + 1], heap[best]))
            best = l + 1;
        if (best == i)
            return;
        Py_ssize_t t = heap[i];
        heap[i] = heap[best];
        heap[best] = t;
        i = best;
    }
}

/* a checked str's JSON text, in quotes, at o; returns the end of what was written */
static unsigned char *
put_json_text(unsigned char *o, const Span *s)
{
    const unsigned char *p = s->p, *e = s->p + s->len;
    *o++ = '"';
    for (;;) {
        const unsigned char *q = p;
        while (e - q >= 8) {
            uint64_t x;
            memcpy(&x, q, 8);
            if (json_special8(x))
                break;
            q += 8;
        }
        while (q < e && (*q >= 0x80 || !json_escaped[*q]))
            q++;
        memcpy(o, p, (size_t)(q - p));
        o += q - p;
        if (q == e)
            break;
        o = put_escape(o, *q);
        p = q + 1;
    }
    *o++ = '"';
    return o;
}

PyDoc_STRVAR(merge_runs_json_doc,
"merge_runs_json(segments, columns) -> (bytes, records, bytes or None) or None\n\n"
"A plain sort's reduce output written from its segments' bytes (each\n"
"``pack([keys, values, 1])`` of str, keys in order): the UTF-8 of\n"
"``json.dumps([k, v], ensure_ascii=False) + \"\\n\"`` for each pair of all the runs in\n"
"key order (equal keys: earlier segments first), the number of pairs, and, if\n"
"``columns``, ``pack([keys, values])`` of those pairs in that order. None if a\n"
"segment is not exactly that (the caller decodes them in Python).");

static PyObject *
merge_runs_json(PyObject *module, PyObject *const *args, Py_ssize_t nargs)
{
    if (arity(nargs, 2, "merge_runs_json takes segments and columns") < 0)
        return NULL;
    PyObject *segments = args[0];
    int columns = PyObject_IsTrue(args[1]);
    if (columns < 0)
        return NULL;
    if (!PyList_CheckExact(segments)) {
        PyErr_SetString(PyExc_TypeError, "merge_runs_json takes a list of segments");
        return NULL;
    }
    /* (a snapshot, strong references: on 3.12+ a class's __buffer__ runs Python code
     * inside PyObject_GetBuffer, which may change the list) */
    PyObject *snapshot = PyList_AsTuple(segments);
    if (snapshot == NULL)
        return NULL;
    Py_ssize_t k = PyTuple_GET_SIZE(snapshot);
    Py_buffer *views = PyMem_Calloc((size_t)(k ? k : 1), sizeof(Py_buffer));
    Run *runs = PyMem_Calloc((size_t)(k ? k : 1), sizeof(Run));
    Py_ssize_t *heap = PyMem_Malloc((size_t)(k ? k : 1) * sizeof(Py_ssize_t));
    Py_ssize_t held = 0, total = 0;
    size_t size = 0, ksize = 0, vsize = 0;  /* (the lines; the packed keys and values) */
    PyObject *out = NULL, *data = NULL, *packed = NULL;
    int fallback = 0;
    if (views == NULL || runs == NULL || heap == NULL) {
        PyErr_NoMemory();
        goto done;
    }
    /* the segments' buffers held (a bytes or memoryview each: no code runs here that
     * could change their bytes), and each run checked whole: its layout, its text, its
     * order */
    for (Py_ssize_t i = 0; i < k; i++) {
        if (PyObject_GetBuffer(PyTuple_GET_ITEM(snapshot, i), &views[i], PyBUF_SIMPLE) < 0)
            goto done;
        held++;
    }
    for (Py_ssize_t i = 0; i < k && !fallback; i++) {
        const unsigned char *p = views[i].buf, *end = p + views[i].len;
        Py_ssize_t n;
        size_t extra = 0;
        Span prev = {NULL, 0, 0}, cur;
        if (p >= end || *p++ != 0x93 || (n = read_array(&p, end)) < 0) {
            fallback = 1;
            break;
        }
        runs[i].k = p;
        runs[i].left = n;
        for (Py_ssize_t j = 0; j < n && !fallback; j++) {
            fallback = read_str(&p, end, &cur, &extra) ||
                (j > 0 && span_cmp(&prev, &cur) > 0);
            ksize += str_head_size((size_t)cur.len) + (size_t)cur.len;
            prev = cur;
        }
        if (fallback || read_array(&p, end) != n) {
            fallback = 1;
            break;
        }
        runs[i].v = p;
        for (Py_ssize_t j = 0; j < n && !fallback; j++) {
            fallback = read_str(&p, end, &cur, &extra);
            vsize += str_head_size((size_t)cur.len) + (size_t)cur.len;
        }
        if (fallback || end - p != 1 || *p != 0x01) {
            fallback = 1;
            break;
        }
        /* (each pair's line: its two texts, their escapes, and 9 bytes of brackets,
         * quotes, separator and newline; its texts are less than its segment's bytes) */
        size_t line_bytes = (size_t)views[i].len + extra;
        if (line_bytes < extra || (size_t)n > (SIZE_MAX - line_bytes) / 9 ||
                size > SIZE_MAX - line_bytes - 9 * (size_t)n) {
            fallback = 1;  /* (past what one buffer holds: the Python path's error) */
            break;
        }
        size += line_bytes + 9 * (size_t)n;
        total += n;
    }
    if (fallback || size > (size_t)PY_SSIZE_T_MAX ||
            (columns && total > (Py_ssize_t)0xFFFFFFFF)) {
        fallback = 1;  /* (the packed keys and values are less than the segments' bytes) */
        goto done;
    }
    /* (made before the merge; nothing after them allocates Python objects) */
    data = PyBytes_FromStringAndSize(NULL, (Py_ssize_t)size);
    if (data == NULL)
        goto done;
    unsigned char *o = (unsigned char *)PyBytes_AS_STRING(data), *ko = NULL, *vo = NULL;
    if (columns) {
        size_t head = total < 16 ? 1 : total < 65536 ? 3 : 5;
        packed = PyBytes_FromStringAndSize(NULL, (Py_ssize_t)(1 + 2 * head + ksize + vsize));
        if (packed == NULL)
            goto done;
        ko = (unsigned char *)PyBytes_AS_STRING(packed);
        *ko++ = 0x92;
        ko = put_array_item(ko, (size_t)total);
        vo = put_array_item(ko + ksize, (size_t)total);
    }
    Py_ssize_t live = 0;
    for (Py_ssize_t i = 0; i < k; i++)
        if (runs[i].left > 0) {
            const unsigned char *end = (const unsigned char *)views[i].buf + views[i].len;
            read_head(&runs[i].k, end, &runs[i].key);  /* (checked above) */
            heap[live++] = i;
        }
    for (Py_ssize_t i = live / 2 - 1; i >= 0; i--)
        heap_down(runs, heap, live, i);
    while (live > 0) {
        Py_ssize_t i = heap[0];
        Run *r = &runs[i];
        const unsigned char *end = (const unsigned char *)views[i].buf + views[i].len;
        Span value;
        read_head(&r->v, end, &value);
        *o++ = '[';
        o = put_json_text(o, &r->key);
        *o++ = ',';
        *o++ = ' ';
        o = put_json_text(o, &value);
        *o++ = ']';
        *o++ = '\n';
        if (columns) {
            ko = put_str_item(ko, &r->key);
            vo = put_str_item(vo, &value);
        }
        if (--r->left == 0)
            heap[0] = heap[--live];
        else
            read_head(&r->k, end, &r->key);
        heap_down(runs, heap, live, 0);
    }
    Py_ssize_t used = (Py_ssize_t)(o - (unsigned char *)PyBytes_AS_STRING(data));
    if (used != (Py_ssize_t)size && _PyBytes_Resize(&data, used) < 0)
        goto done;  /* (data is NULL then) */
    out = Py_BuildValue("(OnO)", data, total, columns ? packed : Py_None);
done:
    for (Py_ssize_t i = 0; i < held; i++)
        PyBuffer_Release(&views[i]);
    PyMem_Free(views);
    PyMem_Free(runs);
    PyMem_Free(heap);
    Py_XDECREF(data);
    Py_XDECREF(packed);
    Py_XDECREF(snapshot);
    if (fallback && !PyErr_Occurred())
        Py_RETURN_NONE;
    return out;
}

/* -- a plain sort's pairs in key order (rangesort.py) -------------------------------- */

PyDoc_STRVAR(sort_pairs_doc,
"sort_pairs(keys, values) -> [keys, values] or None\n\n"
"The pairs of two lists of one length, stably sorted by key: new lists, as\n"
"``order = str_order(keys)`` then each column's items in that order; None if a key is\n"
"not an exact str (sorted() does it then).");

static PyObject *
sort_pairs(PyObject *module, PyObject *const *args, Py_ssize_t nargs)
{
    if (arity(nargs, 2, "sort_pairs takes keys and values") < 0)
        return NULL;
    PyObject *keys = args[0], *values = args[1];
    if (!PyList_CheckExact(keys) || !PyList_CheckExact(values)) {
        PyErr_SetString(PyExc_TypeError, "sort_pairs takes two lists");
        return NULL;
    }
    Py_ssize_t n0 = PyList_GET_SIZE(keys);
    if (PyList_GET_SIZE(values) != n0) {
        PyErr_SetString(PyExc_ValueError, "sort_pairs: keys and values differ in length");
        return NULL;
    }
    /* (the results' lists made first: making them may start the collector, whose
     * finalizers may change the lists; nothing after them runs Python code) */
    PyObject *ko = PyList_New(n0), *vo = PyList_New(n0), *out = PyList_New(2);
    if (ko == NULL || vo == NULL || out == NULL)
        goto fail;
    Py_ssize_t n;
    SortItem *order = str_sort_items(keys, &n);
    if (order == NULL || n != n0 || PyList_GET_SIZE(values) != n0) {
        PyMem_Free(order);
        if (PyErr_Occurred())
            goto fail;
        Py_DECREF(ko);
        Py_DECREF(vo);
        Py_DECREF(out);
        Py_RETURN_NONE;  /* (not all exact str, or changed: sorted() does it) */
    }
    PyObject **kin = ((PyListObject *)keys)->ob_item;
    PyObject **vin = ((PyListObject *)values)->ob_item;
    for (Py_ssize_t i = 0; i < n; i++) {
        Py_ssize_t at = AT(order[i]);
        PyObject *k = kin[at], *v = vin[at];

        Py_INCREF(k);
        Py_INCREF(v);
        PyList_SET_ITEM(ko, i, k);
        PyList_SET_ITEM(vo, i, v);
    }
    PyMem_Free(order);
    PyList_SET_ITEM(out, 0, ko);
    PyList_SET_ITEM(out, 1, vo);
    return out;
fail:
    Py_XDECREF(ko);
    Py_XDECREF(vo);
    Py_XDECREF(out);
    return NULL;
}

static PyMethodDef methods[] = {
    {"str_crc32", (PyCFunction)str_crc32, METH_O, str_crc32_doc},
    {"bucket_pairs", (PyCFunction)(void (*)(void))bucket_pairs, METH_FASTCALL,
     bucket_pairs_doc},
    {"append_pairs", (PyCFunction)(void (*)(void))append_pairs, METH_FASTCALL,
     append_pairs_doc},
    {"bucket_groups", (PyCFunction)(void (*)(void))bucket_groups, METH_FASTCALL,
     bucket_groups_doc},
    {"group_pairs", (PyCFunction)(void (*)(void))group_pairs, METH_FASTCALL,
     group_pairs_doc},
    {"pack_buckets", (PyCFunction)(void (*)(void))pack_buckets, METH_FASTCALL,
     pack_buckets_doc},
    {"bucket_pack", (PyCFunction)(void (*)(void))bucket_pack, METH_FASTCALL,
     bucket_pack_doc},
    {"bucket_groups_pack", (PyCFunction)(void (*)(void))bucket_groups_pack, METH_FASTCALL,
     bucket_groups_pack_doc},
    {"sort_strs", (PyCFunction)sort_strs, METH_O, sort_strs_doc},
    {"str_order", (PyCFunction)str_order, METH_O, str_order_doc},
    {"pack_notes", (PyCFunction)(void (*)(void))pack_notes, METH_FASTCALL, pack_notes_doc},
    {"attempt_ids", (PyCFunction)attempt_ids, METH_O, attempt_ids_doc},
    {"pack_splits", (PyCFunction)(void (*)(void))pack_splits, METH_FASTCALL, pack_splits_doc},
    {"json_lines", (PyCFunction)(void (*)(void))json_lines, METH_FASTCALL, json_lines_doc},
    {"sort_pairs", (PyCFunction)(void (*)(void))sort_pairs, METH_FASTCALL, sort_pairs_doc},
    {"pack_columns", (PyCFunction)(void (*)(void))pack_columns, METH_FASTCALL,
     pack_columns_doc},
    {"merge_runs_json", (PyCFunction)(void (*)(void))merge_runs_json, METH_FASTCALL,
     merge_runs_json_doc},
    {NULL, NULL, 0, NULL}
};

static struct PyModuleDef module_def = {
    PyModuleDef_HEAD_INIT, "pymapreduce._speedups",
    "The shuffle's per-key loops in C (optional: pymapreduce works without it).",
    -1, methods
};

PyMODINIT_FUNC
PyInit__speedups(void)
{
    init_crc_table();
    init_json_table();
    key_records = PyUnicode_InternFromString("records");
    key_bytes = PyUnicode_InternFromString("bytes");
    key_secs = PyUnicode_InternFromString("secs");
    if (key_records == NULL || key_bytes == NULL || key_secs == NULL)
        return NULL;
    return PyModule_Create(&module_def);
}
