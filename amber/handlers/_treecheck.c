/* Structural checks of boosted-tree model files, in one pass over their bytes.
 *
 * LightGBM and XGBoost trust their model files: a child index past a tree, a cycle, a split on
 * a feature the model does not have crashed or hung the process. amber/handlers/_lgb_check.py
 * and _xgb_check.py say what is checked and why; this module does the per-tree work, which in
 * Python took 4-6x the frameworks' own load time (a 300-tree model: 60 ms against 15).
 *
 * Every function reads a buffer it does not own and raises ValueError with the reason, which
 * the Python side turns into a FormatError. Nothing here allocates by a count read from the
 * file before checking that count against the bytes that back it.
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>

#include <math.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

/* -------------------------------------------------------------------------- common helpers */

static void *
bad(const char *format, ...)
{
    va_list vargs;
    va_start(vargs, format);
    PyObject *msg = PyUnicode_FromFormatV(format, vargs);
    va_end(vargs);
    if (msg != NULL) {
        PyErr_SetObject(PyExc_ValueError, msg);
        Py_DECREF(msg);
    }
    return NULL;
}

/* Mark each of ``n`` indices in ``seen`` (``size`` entries, zeroed): 0 when one repeats. */
static int
all_distinct(const int64_t *idx, Py_ssize_t n, unsigned char *seen)
{
    for (Py_ssize_t i = 0; i < n; i++) {
        if (seen[idx[i]])
            return 0;
        seen[idx[i]] = 1;
    }
    return 1;
}

/* ------------------------------------------------------------------------------ LightGBM */

typedef struct {
    const char *key;
    Py_ssize_t klen;
    const char *val;
    Py_ssize_t vlen;
} Field;

typedef struct {
    Field *fields;
    Py_ssize_t n;
    const char *what; /* "tree 12" */
} Block;

static int
field_order(const void *a, const void *b)
{
    const Field *x = a, *y = b;
    Py_ssize_t n = x->klen < y->klen ? x->klen : y->klen;
    int c = memcmp(x->key, y->key, (size_t)n);
    if (c)
        return c;
    return (x->klen > y->klen) - (x->klen < y->klen);
}

/* The key=value lines of text[start:stop], sorted by key; a key given twice is refused. */
static int
read_block(const char *text, Py_ssize_t start, Py_ssize_t stop, Block *block)
{
    Py_ssize_t lines = 1;
    for (const char *at = text + start, *end = text + stop;
         (at = memchr(at, '\n', (size_t)(end - at))) != NULL; at++)
        lines++;
    block->fields = PyMem_Malloc((size_t)lines * sizeof(Field));
    if (block->fields == NULL) {
        PyErr_NoMemory();
        return -1;
    }
    block->n = 0;
    Py_ssize_t i = start;
    while (i <= stop) {
        const char *line = text + i;
        const char *end = memchr(line, '\n', (size_t)(stop - i));
        Py_ssize_t len = end ? end - line : stop - i;
        const char *eq = memchr(line, '=', (size_t)len);
        if (eq != NULL) {
            Field *f = &block->fields[block->n++];
            f->key = line;
            f->klen = eq - line;
            f->val = eq + 1;
            f->vlen = len - f->klen - 1;
        }
        i += len + 1;
    }
    qsort(block->fields, (size_t)block->n, sizeof(Field), field_order);
    for (Py_ssize_t k = 1; k < block->n; k++) {
        if (field_order(&block->fields[k - 1], &block->fields[k]) == 0) {
            PyObject *name = PyUnicode_DecodeASCII(block->fields[k].key, block->fields[k].klen,
                                                   "replace");
            if (name != NULL) {
                bad("%s gives %U twice", block->what, name);
                Py_DECREF(name);
            }
            return -1;
        }
    }
    return 0;
}

static const Field *
lookup(const Block *block, const char *key)
{
    Field probe = {key, (Py_ssize_t)strlen(key), NULL, 0};
    return bsearch(&probe, block->fields, (size_t)block->n, sizeof(Field), field_order);
}

/* fields.get(key, "") is non-empty */
static int
present(const Block *block, const char *key)
{
    const Field *f = lookup(block, key);
    return f != NULL && f->vlen > 0;
}

/* An integer field: -?[0-9]{1,19} within low..high (_int in _lgb_check.py). */
static int
read_int(const Block *block, const char *key, int64_t low, int64_t high, int64_t *out)
{
    const Field *f = lookup(block, key);
    if (f == NULL) {
        bad("%s has no %s", block->what, key);
        return -1;
    }
    const char *s = f->val;
    Py_ssize_t n = f->vlen, i = 0;
    int negative = n > 0 && s[0] == '-';
    i = negative;
    int ok = n - i >= 1 && n - i <= 19;
    uint64_t v = 0;
    for (; ok && i < n; i++) {
        if (s[i] < '0' || s[i] > '9')
            ok = 0;
        else
            v = v * 10 + (uint64_t)(s[i] - '0'); /* 19 digits fit in 64 bits */
    }
    if (!ok) {
        PyObject *text = PyUnicode_DecodeUTF8(s, n < 160 ? n : 160, "replace");
        if (text != NULL) {
            PyObject *head = PyUnicode_Substring(text, 0, 40);
            if (head != NULL) {
                bad("%s's %s is %R, not an integer", block->what, key, head);
                Py_DECREF(head);
            }
            Py_DECREF(text);
        }
        return -1;
    }
    /* 19 digits can pass int64: such a value is outside every range asked for anyway */
    int64_t value = v > (uint64_t)INT64_MAX ? (negative ? INT64_MIN : INT64_MAX)
                                            : (negative ? -(int64_t)v : (int64_t)v);
    if (value < low || value > high) {
        bad("%s's %s is %s%llu, outside %lld..%lld", block->what, key, negative && v ? "-" : "",
            (unsigned long long)v, (long long)low, (long long)high);
        return -1;
    }
    *out = value;
    return 0;
}

static const char GROUPED_KEYS[][16] = {"leaf_features", "leaf_coeff"};

static int
is_grouped(const char *key)
{
    for (size_t k = 0; k < sizeof GROUPED_KEYS / sizeof GROUPED_KEYS[0]; k++)
        if (strcmp(key, GROUPED_KEYS[k]) == 0)
            return 1;
    return 0;
}

/* digits, a minus sign, a space */
static inline unsigned char
int_char(unsigned char c)
{
    return (unsigned char)(c - '0') < 10 || c == '-' || c == ' ';
}

/* and letters, a plus sign, a point (nan, inf, 1e-05: LightGBM reads them itself) */
static inline unsigned char
number_char(unsigned char c)
{
    return int_char(c) || (unsigned char)((c | 0x20) - 'a') < 26 || c == '+' || c == '.';
}

/* The values of one line (_numbers in _lgb_check.py): ASCII digits, signs and single spaces
 * (numbers: also letters and points; a linear tree's per-leaf lists: runs of spaces). Checks
 * there are ``length`` of them (unless negative). For integers, ``*values`` gets a fresh
 * array of them (PyMem_Free it; NULL when there are none). Returns the count, or -1. */
static Py_ssize_t
read_numbers(const Block *block, const char *key, Py_ssize_t length, int ints,
             int64_t **values)
{
    const Field *f = lookup(block, key);
    const char *s = f ? f->val : "";
    Py_ssize_t n = f ? f->vlen : 0;
    int grouped = is_grouped(key);
    /* the characters, the spacing (no space first, last or after another, except in grouped
     * lists) and the count, in one pass the compiler vectorises: most of a model text is this */
    Py_ssize_t count = 0;
    unsigned shaped = 1;
    if (n > 0) {
        const unsigned char *u = (const unsigned char *)s;
        unsigned char wrong = !(ints ? int_char(u[0]) : number_char(u[0]));
        unsigned char doubled = u[0] == ' ', tokens = u[0] != ' ';
        count = tokens;
        if (ints)
            for (Py_ssize_t i = 1; i < n; i++) {
                unsigned char space = u[i] == ' ', before = u[i - 1] == ' ';
                wrong |= !int_char(u[i]);
                doubled |= space & before;
                count += (!space) & before;
            }
        else
            for (Py_ssize_t i = 1; i < n; i++) {
                unsigned char space = u[i] == ' ', before = u[i - 1] == ' ';
                wrong |= !number_char(u[i]);
                doubled |= space & before;
                count += (!space) & before;
            }
        doubled |= u[n - 1] == ' '; /* last */
        shaped = !wrong && (grouped || !doubled);
    }
    if (!shaped) {
        bad("%s's %s is not a list of %s", block->what, key, ints ? "integers" : "numbers");
        return -1;
    }
    if (length >= 0 && count != length) {
        bad("%s's %s has %zd values, not %zd", block->what, key, count, length);
        return -1;
    }
    if (!ints)
        return count;
    *values = NULL;
    if (count == 0)
        return 0;
    int64_t *out = PyMem_Malloc((size_t)count * sizeof(int64_t));
    if (out == NULL) {
        PyErr_NoMemory();
        return -1;
    }
    Py_ssize_t k = 0, i = 0;
    while (i < n) {
        while (i < n && s[i] == ' ')
            i++;
        if (i >= n)
            break;
        int negative = s[i] == '-';
        Py_ssize_t j = i + negative, digits = 0;
        uint64_t v = 0;
        int ok = 1;
        for (; j < n && s[j] != ' '; j++, digits++) {
            if (s[j] < '0' || s[j] > '9' || v > (UINT64_MAX - 9) / 10)
                ok = 0;
            else
                v = v * 10 + (uint64_t)(s[j] - '0');
        }
        if (!ok || digits == 0 || v > (uint64_t)INT64_MAX + (uint64_t)negative) {
            PyMem_Free(out);
            bad("%s's %s holds values that are not integers", block->what, key);
            return -1;
        }
        out[k++] = negative ? (int64_t)(0 - v) : (int64_t)v;
        i = j;
    }
    *values = out;
    return count;
}

static int64_t
min_of(const int64_t *v, Py_ssize_t n)
{
    int64_t m = INT64_MAX;
    for (Py_ssize_t i = 0; i < n; i++)
        m = v[i] < m ? v[i] : m;
    return m;
}

static int64_t
max_of(const int64_t *v, Py_ssize_t n)
{
    int64_t m = INT64_MIN;
    for (Py_ssize_t i = 0; i < n; i++)
        m = v[i] > m ? v[i] : m;
    return m;
}

/* The thresholds, read as Python reads floats: those of categorical splits (the split's index
 * into cat_boundaries) must be whole numbers in 0..num_cat-1. */
static int
check_categorical_thresholds(const Block *block, const int64_t *kinds, Py_ssize_t inner,
                             int64_t num_cat)
{
    const Field *f = lookup(block, "threshold");
    Py_ssize_t n = f ? f->vlen : 0;
    char *copy = PyMem_Malloc((size_t)n + 1); /* each token NUL-ended in place */
    if (copy == NULL) {
        PyErr_NoMemory();
        return -1;
    }
    if (n)
        memcpy(copy, f->val, (size_t)n);
    copy[n] = 0;
    for (Py_ssize_t i = 0; i < n; i++)
        copy[i] = copy[i] == ' ' ? 0 : copy[i];
    int status = 0;
    Py_ssize_t node = 0;
    for (Py_ssize_t i = 0; i < n && status == 0; i++) {
        if (copy[i] == 0 || (i > 0 && copy[i - 1] != 0))
            continue; /* not the start of a token */
        char *end;
        double x = PyOS_string_to_double(copy + i, &end, NULL);
        if ((x == -1.0 && PyErr_Occurred()) || *end != 0) {
            PyErr_Clear();
            bad("%s's threshold holds values that are not numbers", block->what);
            status = -1;
        }
        else if (node < inner && (kinds[node] & 1) &&
                 !(x == trunc(x) && x >= 0 && x < (double)num_cat)) {
            bad("%s has a categorical split past its %lld category sets", block->what,
                (long long)num_cat);
            status = -1;
        }
        node++;
    }
    PyMem_Free(copy);
    return status;
}

/* The checks of _check_tree in _lgb_check.py, on one parsed tree block. */
static int
check_lgb_tree(const Block *b, int64_t n_features)
{
    int64_t *features = NULL, *left = NULL, *right = NULL, *kinds = NULL, *bounds = NULL,
            *bitsets = NULL, *counts = NULL, *used = NULL, *children = NULL;
    unsigned char *seen = NULL;
    int status = -1;
    int64_t leaves, num_cat;
    if (read_int(b, "num_leaves", 1, INT32_MAX, &leaves) < 0)
        goto done;
    Py_ssize_t inner = (Py_ssize_t)leaves - 1;
    if (read_numbers(b, "leaf_value", leaves, 0, NULL) < 0)
        goto done;
    if (present(b, "leaf_weight") && read_numbers(b, "leaf_weight", leaves, 0, NULL) < 0)
        goto done;
    if (present(b, "leaf_count") && read_numbers(b, "leaf_count", leaves, 0, NULL) < 0)
        goto done;
    if (inner == 0) {
        status = 0;
        goto done;
    }
    /* leaves is now backed by as many values in the text: the arrays below are bounded */
    if (read_numbers(b, "split_feature", inner, 1, &features) < 0)
        goto done;
    if (min_of(features, inner) < 0 || max_of(features, inner) >= n_features) {
        bad("%s splits on a feature outside 0..%lld", b->what, (long long)(n_features - 1));
        goto done;
    }
    if (read_numbers(b, "left_child", inner, 1, &left) < 0 ||
        read_numbers(b, "right_child", inner, 1, &right) < 0)
        goto done;
    /* every inner node but the root is the child of exactly one node, and every leaf too:
     * the tree is a tree, with no cycle and no index past its arrays */
    children = PyMem_Malloc((size_t)(2 * inner) * sizeof(int64_t));
    seen = PyMem_Calloc((size_t)(inner + leaves), 1);
    if (children == NULL || seen == NULL) {
        PyErr_NoMemory();
        goto done;
    }
    Py_ssize_t n_nodes = 0, n_leaves = 0;
    int linked = 1;
    for (Py_ssize_t i = 0; i < 2 * inner && linked; i++) {
        int64_t c = i < inner ? left[i] : right[i - inner];
        if (c >= 0) {
            linked = c >= 1 && c < inner;
            children[n_nodes++] = c;
        }
        else {
            linked = ~c < leaves;
            children[n_nodes++] = inner + ~c;
            n_leaves++;
        }
    }
    if (!linked || n_nodes - n_leaves != inner - 1 || n_leaves != leaves ||
        !all_distinct(children, n_nodes, seen)) {
        bad("%s's child links do not form a tree of %lld leaves", b->what, (long long)leaves);
        goto done;
    }
    if (read_numbers(b, "decision_type", inner, 1, &kinds) < 0)
        goto done;
    if (min_of(kinds, inner) < 0 || max_of(kinds, inner) > 15) {
        bad("%s has a decision type outside 0..15", b->what);
        goto done;
    }
    if (read_numbers(b, "threshold", inner, 0, NULL) < 0)
        goto done;
    static const char *inner_values[] = {"split_gain", "internal_value", "internal_weight",
                                         "internal_count"};
    for (size_t k = 0; k < 4; k++)
        if (present(b, inner_values[k]) && read_numbers(b, inner_values[k], inner, 0, NULL) < 0)
            goto done;
    if (read_int(b, "num_cat", 0, inner, &num_cat) < 0)
        goto done;
    int categorical = 0;
    for (Py_ssize_t i = 0; i < inner; i++)
        categorical |= (int)(kinds[i] & 1);
    if (num_cat || categorical) {
        Py_ssize_t n_bitsets;
        if (read_numbers(b, "cat_boundaries", num_cat + 1, 1, &bounds) < 0 ||
            (n_bitsets = read_numbers(b, "cat_threshold", -1, 1, &bitsets)) < 0)
            goto done;
        int split = bounds[0] == 0 && bounds[num_cat] == n_bitsets;
        for (Py_ssize_t i = 1; i <= num_cat && split; i++)
            split = bounds[i] >= bounds[i - 1];
        if (!split) {
            bad("%s's cat_boundaries do not split its category bitsets", b->what);
            goto done;
        }
        if (check_categorical_thresholds(b, kinds, inner, num_cat) < 0)
            goto done;
    }
    const Field *linear = lookup(b, "is_linear");
    if (linear != NULL && !(linear->vlen == 0 || (linear->vlen == 1 && linear->val[0] == '0'))) {
        Py_ssize_t n_used;
        if (read_numbers(b, "num_features", leaves, 1, &counts) < 0 ||
            (n_used = read_numbers(b, "leaf_features", -1, 1, &used)) < 0)
            goto done;
        int64_t total = 0;
        int matched = 1;
        for (Py_ssize_t i = 0; i < leaves && matched; i++) {
            matched = counts[i] >= 0 && counts[i] <= n_used - total;
            total += matched ? counts[i] : 0;
        }
        if (!matched || total != n_used) {
            bad("%s's linear leaves do not match their feature lists", b->what);
            goto done;
        }
        if (n_used && (min_of(used, n_used) < 0 || max_of(used, n_used) >= n_features)) {
            bad("%s's linear leaves use a feature outside 0..%lld", b->what,
                (long long)(n_features - 1));
            goto done;
        }
        if (read_numbers(b, "leaf_coeff", n_used, 0, NULL) < 0 ||
            read_numbers(b, "leaf_const", leaves, 0, NULL) < 0)
            goto done;
    }
    status = 0;
done:
    PyMem_Free(features);
    PyMem_Free(left);
    PyMem_Free(right);
    PyMem_Free(kinds);
    PyMem_Free(bounds);
    PyMem_Free(bitsets);
    PyMem_Free(counts);
    PyMem_Free(used);
    PyMem_Free(children);
    PyMem_Free(seen);
    return status;
}

static int
buffer_arg(PyObject *obj, Py_buffer *view)
{
    if (PyObject_GetBuffer(obj, view, PyBUF_SIMPLE) < 0)
        return -1;
    return 0;
}

static PyObject *
lgb_trees(PyObject *self, PyObject *const *args, Py_ssize_t nargs)
{
    if (nargs != 3) {
        PyErr_SetString(PyExc_TypeError, "lgb_trees(text, bounds, n_features)");
        return NULL;
    }
    long long n_features = PyLong_AsLongLong(args[2]);
    if (n_features == -1 && PyErr_Occurred())
        return NULL;
    if (!PyList_Check(args[1])) {
        PyErr_SetString(PyExc_TypeError, "lgb_trees: bounds must be a list of offsets");
        return NULL;
    }
    Py_buffer view;
    if (buffer_arg(args[0], &view) < 0)
        return NULL;
    PyObject *bounds = args[1];
    Py_ssize_t n_trees = PyList_GET_SIZE(bounds) - 1;
    const char *text = view.buf;
    int failed = 0;
    for (Py_ssize_t k = 0; k < n_trees && !failed; k++) {
        Py_ssize_t start = PyLong_AsSsize_t(PyList_GET_ITEM(bounds, k));
        Py_ssize_t stop = PyLong_AsSsize_t(PyList_GET_ITEM(bounds, k + 1));
        if (PyErr_Occurred() || start < 0 || stop < start || stop > view.len) {
            if (!PyErr_Occurred())
                PyErr_SetString(PyExc_IndexError, "lgb_trees: a tree's bounds are not in text");
            failed = 1;
            break;
        }
        char what[48];
        snprintf(what, sizeof what, "tree %zd", k);
        Block block = {NULL, 0, what};
        failed = read_block(text, start, stop, &block) < 0 || check_lgb_tree(&block, n_features) < 0;
        PyMem_Free(block.fields);
    }
    PyBuffer_Release(&view);
    if (failed)
        return NULL;
    Py_RETURN_NONE;
}

/* The offsets of the tree headers ("Tree=<digits>" lines), whether they number the trees
 * 0, 1, 2, ... in order, and the offset of the newline before the first line that starts with
 * "end of trees" (-1: none); a line starting with "Tree" that is no such header is refused. */
static PyObject *
lgb_tree_starts(PyObject *self, PyObject *arg)
{
    static const char END[] = "end of trees";
    Py_buffer view;
    if (buffer_arg(arg, &view) < 0)
        return NULL;
    const char *text = view.buf;
    Py_ssize_t n = view.len, end_at = -1;
    PyObject *starts = PyList_New(0);
    int in_order = 1;
    Py_ssize_t line = 0;
    while (starts != NULL && line < n) {
        const char *nl = memchr(text + line, '\n', (size_t)(n - line));
        Py_ssize_t len = nl ? nl - (text + line) : n - line;
        if (end_at < 0 && line > 0 && len >= (Py_ssize_t)sizeof END - 1 &&
            memcmp(text + line, END, sizeof END - 1) == 0)
            end_at = line - 1;
        if (len >= 4 && memcmp(text + line, "Tree", 4) == 0) {
            Py_ssize_t digits = 0;
            unsigned long long number = 0;
            int header = nl != NULL && len > 5 && text[line + 4] == '=';
            for (Py_ssize_t i = 5; header && i < len; i++, digits++) {
                char c = text[line + i];
                header = c >= '0' && c <= '9';
                if (header && number < 1000000000000ULL)
                    number = number * 10 + (unsigned long long)(c - '0');
            }
            if (!header || digits == 0) {
                Py_CLEAR(starts);
                bad("a line starts with 'Tree' but is no tree header");
                break;
            }
            in_order = in_order && number == (unsigned long long)PyList_GET_SIZE(starts);
            PyObject *at = PyLong_FromSsize_t(line);
            if (at == NULL || PyList_Append(starts, at) < 0)
                Py_CLEAR(starts);
            Py_XDECREF(at);
        }
        line += len + 1;
    }
    PyBuffer_Release(&view);
    if (starts == NULL)
        return NULL;
    return Py_BuildValue("(NOn)", starts, in_order ? Py_True : Py_False, end_at);
}

static PyMethodDef methods[] = {
    {"lgb_tree_starts", lgb_tree_starts, METH_O,
     "lgb_tree_starts(text)\n--\n\n"
     "The offsets of a LightGBM model text's tree headers, whether they number the trees in "
     "order, and where its 'end of trees' line starts (the newline before it; -1: none); "
     "ValueError for a line starting with 'Tree' that is no header."},
    {"lgb_trees", (PyCFunction)(void (*)(void))lgb_trees, METH_FASTCALL,
     "lgb_trees(text, bounds, n_features)\n--\n\n"
     "Check each tree text[bounds[k]:bounds[k + 1]] of a LightGBM model text; ValueError "
     "saying what is wrong with the first bad one."},
    {NULL, NULL, 0, NULL}};

static struct PyModuleDef moduledef = {
    PyModuleDef_HEAD_INIT, "amber.handlers._treecheck",
    "Structural checks of LightGBM and XGBoost model files before their own parsers read them.",
    -1, methods};

PyMODINIT_FUNC
PyInit__treecheck(void)
{
    return PyModule_Create(&moduledef);
}
