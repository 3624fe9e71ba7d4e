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

#include <errno.h>
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

/* The depth of a tree whose child links were checked (every node reached at most once from
 * the root): the most splits on a path from the root to a leaf. ``child(node, 0 or 1)`` gives
 * a node index, or -1 for a leaf. Iterative: a forged chain is as deep as it is long. */
typedef int64_t (*ChildOf)(const void *tree, int64_t node, int side);

static int
tree_depth(const void *tree, ChildOf child, Py_ssize_t n_nodes, int64_t *depth)
{
    int64_t *stack = PyMem_Malloc((size_t)(2 * n_nodes + 2) * sizeof(int64_t));
    if (stack == NULL) {
        PyErr_NoMemory();
        return -1;
    }
    Py_ssize_t top = 0;
    int64_t deepest = 0;
    stack[top++] = 0; /* the root, at depth 0 */
    stack[top++] = 0;
    while (top > 0) {
        int64_t d = stack[--top], node = stack[--top];
        for (int side = 0; side < 2; side++) {
            int64_t c = child(tree, node, side);
            if (c < 0)
                deepest = d + 1 > deepest ? d + 1 : deepest;
            else if (top + 2 <= 2 * n_nodes + 2) {
                stack[top++] = c;
                stack[top++] = d + 1;
            }
        }
    }
    PyMem_Free(stack);
    *depth = deepest;
    return 0;
}

/* ------------------------------------------------------------------------------ LightGBM */

/* How LightGBM reads a tree (Tree::Tree(const char*, size_t*) in src/io/tree.cpp, 4.x): after
 * the "Tree=K" line, up to 22 lines, each split at its first '=' (it scans for one without
 * looking for the line's end), until an empty line; then the fields it needs, a missing one
 * being a fatal error. With tree_sizes it loads the trees on several threads, where a fatal
 * error ends the process (std::terminate), so anything it would refuse must be refused here. */
#define MAX_TREE_LINES 22

typedef struct {
    const char *key;
    Py_ssize_t klen;
    const char *val;
    Py_ssize_t vlen;
} Field;

typedef struct {
    Field fields[MAX_TREE_LINES];
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

/* The tree text[start:stop] (its "Tree=K" line first): at most 22 key=value lines, then an
 * empty line, then only empty lines; sorted by key, a key given twice refused. */
static int
read_block(const char *text, Py_ssize_t start, Py_ssize_t stop, Block *block)
{
    const char *at = memchr(text + start, '\n', (size_t)(stop - start)), *end = text + stop;
    int ended = 0;
    block->n = 0;
    for (at = at ? at + 1 : end; at < end;) {
        const char *nl = memchr(at, '\n', (size_t)(end - at));
        Py_ssize_t len = (nl ? nl : end) - at;
        if (len == 0)
            ended = 1;
        else if (ended) {
            bad("%s has a line after the empty line that ends it (LightGBM would not read "
                "it)", block->what);
            return -1;
        }
        else {
            const char *eq = memchr(at, '=', (size_t)len);
            if (eq == NULL) {
                bad("%s has a line that is not key=value", block->what);
                return -1;
            }
            if (block->n == MAX_TREE_LINES) {
                bad("%s has more than %d lines (LightGBM reads %d)", block->what,
                    MAX_TREE_LINES, MAX_TREE_LINES);
                return -1;
            }
            Field *f = &block->fields[block->n++];
            f->key = at;
            f->klen = eq - at;
            f->val = eq + 1;
            f->vlen = len - f->klen - 1;
        }
        if (nl == NULL) /* the last line has no newline: no empty line after it */
            break;
        at = nl + 1;
    }
    if (!ended) {
        /* LightGBM's reader would run on past the tree, looking for '=' */
        bad("%s does not end with an empty line", block->what);
        return -1;
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

static int
require(const Block *block, const char *key)
{
    if (lookup(block, key) != NULL)
        return 0;
    bad("%s has no %s", block->what, key);
    return -1;
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

/* and letters, a plus sign, a point */
static inline unsigned char
number_char(unsigned char c)
{
    return int_char(c) || (unsigned char)((c | 0x20) - 'a') < 26 || c == '+' || c == '.';
}

/* A number as LightGBM's readers all take it: [+-]? (digits [. digits?] | . digits)
 * ([eE] [+-]? digits)?, or [+-]? nan / inf / infinity in any case. Its other readers stop at
 * the first character they do not take, and the next value starts there (a count shifted), or
 * fail (a fatal error). A table-driven scan: most of a model text is numbers. */
enum { C_DIGIT, C_SIGN, C_DOT, C_E, C_LETTER, C_OTHER };
enum { S_START, S_SIGN, S_INT, S_POINT, S_BARE_POINT, S_FRAC, S_E, S_E_SIGN, S_EXP, S_WORD,
       S_BAD, N_STATES };
static unsigned char NUMBER_CLASS[256];
static unsigned char NUMBER_NEXT[N_STATES][C_OTHER + 1];

static void
init_number_scan(void)
{
    for (int c = 0; c < 256; c++) {
        int letter = (c | 0x20) >= 'a' && (c | 0x20) <= 'z';
        NUMBER_CLASS[c] = (unsigned char)(c >= '0' && c <= '9' ? C_DIGIT
                                          : c == '+' || c == '-' ? C_SIGN
                                          : c == '.' ? C_DOT
                                          : c == 'e' || c == 'E' ? C_E
                                          : letter ? C_LETTER : C_OTHER);
    }
    for (int s = 0; s < N_STATES; s++)
        for (int k = 0; k <= C_OTHER; k++)
            NUMBER_NEXT[s][k] = S_BAD;
    unsigned char (*t)[C_OTHER + 1] = NUMBER_NEXT;
    t[S_START][C_DIGIT] = S_INT, t[S_START][C_SIGN] = S_SIGN, t[S_START][C_DOT] = S_BARE_POINT;
    t[S_START][C_LETTER] = t[S_START][C_E] = S_WORD;
    t[S_SIGN][C_DIGIT] = S_INT, t[S_SIGN][C_DOT] = S_BARE_POINT;
    t[S_SIGN][C_LETTER] = t[S_SIGN][C_E] = S_WORD;
    t[S_INT][C_DIGIT] = S_INT, t[S_INT][C_DOT] = S_POINT, t[S_INT][C_E] = S_E;
    t[S_POINT][C_DIGIT] = S_FRAC, t[S_POINT][C_E] = S_E;
    t[S_BARE_POINT][C_DIGIT] = S_FRAC;
    t[S_FRAC][C_DIGIT] = S_FRAC, t[S_FRAC][C_E] = S_E;
    t[S_E][C_DIGIT] = S_EXP, t[S_E][C_SIGN] = S_E_SIGN;
    t[S_E_SIGN][C_DIGIT] = S_EXP;
    t[S_EXP][C_DIGIT] = S_EXP;
    t[S_WORD][C_LETTER] = t[S_WORD][C_E] = S_WORD;
}

static int
number_word(const char *s, Py_ssize_t n)
{
    static const char *const words[] = {"nan", "inf", "infinity"};
    if (n > 0 && (s[0] == '-' || s[0] == '+'))
        s++, n--;
    for (int w = 0; w < 3; w++) {
        Py_ssize_t len = (Py_ssize_t)strlen(words[w]);
        int same = len == n;
        for (Py_ssize_t i = 0; same && i < n; i++)
            same = (s[i] | 0x20) == words[w][i];
        if (same)
            return 1;
    }
    return 0;
}

/* Every space-separated token of s[0:n] is such a number. */
static int
numbers_well_formed(const char *s, Py_ssize_t n)
{
    unsigned state = S_START;
    Py_ssize_t token = 0;
    for (Py_ssize_t i = 0; i <= n; i++) {
        if (i == n || s[i] == ' ') {
            if (state == S_WORD) {
                if (!number_word(s + token, i - token))
                    return 0;
            }
            else if (state != S_START && state != S_INT && state != S_POINT &&
                     state != S_FRAC && state != S_EXP)
                return 0;
            state = S_START;
            token = i + 1;
            continue;
        }
        state = NUMBER_NEXT[state][NUMBER_CLASS[(unsigned char)s[i]]];
    }
    return 1;
}

/* The values of one line (_numbers in _lgb_check.py): integers are -?digits, numbers as
 * numbers_well_formed takes them, single spaces between (a linear tree's per-leaf lists:
 * runs of spaces). Checks there are ``length`` of them (unless negative), and for integers
 * that each is within low..high; ``*values`` then gets a fresh array of them (PyMem_Free it;
 * NULL when there are none). Returns the count, or -1. */
static Py_ssize_t
read_numbers(const Block *block, const char *key, Py_ssize_t length, int ints, int64_t low,
             int64_t high, int64_t **values)
{
    const Field *f = lookup(block, key);
    const char *s = f ? f->val : "";
    Py_ssize_t n = f ? f->vlen : 0;
    int grouped = is_grouped(key);
    /* the characters, the spacing (no space first, last or after another, except in grouped
     * lists) and the count, in one pass the compiler vectorises */
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
        shaped = !wrong && (grouped || !doubled) && (ints || numbers_well_formed(s, n));
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
        out[k] = negative ? (int64_t)(0 - v) : (int64_t)v;
        if (out[k] < low || out[k] > high) {
            PyMem_Free(out);
            bad("%s's %s holds a value outside %lld..%lld", block->what, key, (long long)low,
                (long long)high);
            return -1;
        }
        k++;
        i = j;
    }
    *values = out;
    return count;
}

/* numbers of a line that LightGBM reads as floating-point: only counted */
static Py_ssize_t
lgb_floats(const Block *block, const char *key, Py_ssize_t length)
{
    return read_numbers(block, key, length, 0, 0, 0, NULL);
}

/* A copy of ``key``'s value with every space made a NUL, and a NUL after it: its tokens, each a
 * C string starting where a non-NUL follows a NUL (or at 0). ``*n``: the value's length.
 * PyMem_Free it; NULL with MemoryError set. */
static char *
token_copy(const Block *block, const char *key, Py_ssize_t *n)
{
    const Field *f = lookup(block, key);
    *n = f ? f->vlen : 0;
    char *copy = PyMem_Malloc((size_t)*n + 1);
    if (copy == NULL) {
        PyErr_NoMemory();
        return NULL;
    }
    if (*n)
        memcpy(copy, f->val, (size_t)*n);
    copy[*n] = 0;
    for (Py_ssize_t i = 0; i < *n; i++)
        copy[i] = copy[i] == ' ' ? 0 : copy[i];
    return copy;
}

/* Numbers LightGBM reads with std::stod (a linear tree's leaf_const and leaf_coeff), whose
 * tokens lgb_floats has checked: each must be within a double's normal range, since stod
 * throws where strtod reports ERANGE (1e309, 1e-320, 1e-99999), and a tree loaded on one of
 * LightGBM's threads then ends the process (SIGABRT). strtod is the function stod calls. */
static int
lgb_doubles_in_range(const Block *block, const char *key)
{
    Py_ssize_t n;
    char *copy = token_copy(block, key, &n);
    if (copy == NULL)
        return -1;
    int status = 0;
    for (Py_ssize_t i = 0; i < n && status == 0; i++) {
        if (copy[i] == 0 || (i > 0 && copy[i - 1] != 0))
            continue; /* not the start of a token */
        errno = 0;
        (void)strtod(copy + i, NULL);
        if (errno == ERANGE) {
            bad("%s's %s holds a number outside the range of a double", block->what, key);
            status = -1;
        }
    }
    PyMem_Free(copy);
    return status;
}

/* integers LightGBM reads as int (or int8_t, uint32_t: ``low``..``high``) */
static Py_ssize_t
lgb_ints(const Block *block, const char *key, Py_ssize_t length, int64_t low, int64_t high,
          int64_t **values)
{
    return read_numbers(block, key, length, 1, low, high, values);
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
    Py_ssize_t n;
    char *copy = token_copy(block, "threshold", &n);
    if (copy == NULL)
        return -1;
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

typedef struct {
    const int64_t *left, *right;
} Links;

static int64_t
lgb_child(const void *tree, int64_t node, int side)
{
    const Links *links = tree;
    int64_t c = side ? links->right[node] : links->left[node];
    return c >= 0 ? c : -1;
}

/* The checks of one tree, in the order LightGBM reads its fields (see above); sets its depth. */
static int
check_lgb_tree(const Block *b, int64_t n_features, int64_t *depth, int64_t *category_bits)
{
    *depth = 0;
    int64_t *features = NULL, *left = NULL, *right = NULL, *kinds = NULL, *bounds = NULL,
            *bitsets = NULL, *counts = NULL, *used = NULL, *children = NULL, *unused = NULL;
    unsigned char *seen = NULL;
    int status = -1;
    int64_t leaves, num_cat;
    /* what LightGBM reads of every tree */
    if (read_int(b, "num_leaves", 1, INT32_MAX, &leaves) < 0)
        goto done;
    Py_ssize_t inner = (Py_ssize_t)leaves - 1;
    if (read_int(b, "num_cat", 0, inner, &num_cat) < 0 || require(b, "leaf_value") < 0 ||
        lgb_floats(b, "leaf_value", leaves) < 0)
        goto done;
    /* leaves is now backed by as many values in the text: the arrays below are bounded */
    if (lookup(b, "shrinkage") != NULL && lgb_floats(b, "shrinkage", 1) < 0)
        goto done;
    const Field *linear_field = lookup(b, "is_linear");
    int linear = 0;
    if (linear_field != NULL) {
        if (linear_field->vlen != 1 || (linear_field->val[0] != '0' && linear_field->val[0] != '1')) {
            bad("%s's is_linear is not 0 or 1", b->what);
            goto done;
        }
        linear = linear_field->val[0] == '1';
    }
    if (inner == 0 && !linear) {
        status = 0;
        goto done;
    }
    static const char *const needed[] = {"left_child", "right_child", "split_feature",
                                         "threshold", "decision_type"};
    for (size_t k = 0; k < sizeof needed / sizeof needed[0]; k++)
        if (require(b, needed[k]) < 0)
            goto done;
    if (lgb_ints(b, "split_feature", inner, INT32_MIN, INT32_MAX, &features) < 0)
        goto done;
    if (inner > 0 && (min_of(features, inner) < 0 || max_of(features, inner) >= n_features)) {
        bad("%s splits on a feature outside 0..%lld", b->what, (long long)(n_features - 1));
        goto done;
    }
    if (lgb_ints(b, "left_child", inner, INT32_MIN, INT32_MAX, &left) < 0 ||
        lgb_ints(b, "right_child", inner, INT32_MIN, INT32_MAX, &right) < 0)
        goto done;
    if (inner > 0) {
        /* every inner node but the root is the child of exactly one node, and every leaf
         * too: the tree is a tree, with no cycle and no index past its arrays */
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
            bad("%s's child links do not form a tree of %lld leaves", b->what,
                (long long)leaves);
            goto done;
        }
        Links links = {left, right};
        if (tree_depth(&links, lgb_child, inner, depth) < 0)
            goto done;
    }
    if (lgb_ints(b, "decision_type", inner, INT32_MIN, INT32_MAX, &kinds) < 0)
        goto done;
    if (inner > 0 && (min_of(kinds, inner) < 0 || max_of(kinds, inner) > 15)) {
        bad("%s has a decision type outside 0..15", b->what);
        goto done;
    }
    if (lgb_floats(b, "threshold", inner) < 0)
        goto done;
    /* read when present, empty or not */
    static const char *const inner_floats[] = {"split_gain", "internal_value", "internal_weight"};
    for (size_t k = 0; k < 3; k++)
        if (lookup(b, inner_floats[k]) != NULL && lgb_floats(b, inner_floats[k], inner) < 0)
            goto done;
    if (lookup(b, "internal_count") != NULL &&
        lgb_ints(b, "internal_count", inner, INT32_MIN, INT32_MAX, &unused) < 0)
        goto done;
    PyMem_Free(unused);
    unused = NULL;
    if (lookup(b, "leaf_weight") != NULL && lgb_floats(b, "leaf_weight", leaves) < 0)
        goto done;
    if (lookup(b, "leaf_count") != NULL &&
        lgb_ints(b, "leaf_count", leaves, INT32_MIN, INT32_MAX, &unused) < 0)
        goto done;
    if (linear) {
        Py_ssize_t n_used;
        if (require(b, "leaf_const") < 0 || lgb_floats(b, "leaf_const", leaves) < 0 ||
            lgb_doubles_in_range(b, "leaf_const") < 0 || require(b, "num_features") < 0 ||
            lgb_ints(b, "num_features", leaves, INT32_MIN, INT32_MAX, &counts) < 0 ||
            (n_used = lgb_ints(b, "leaf_features", -1, INT32_MIN, INT32_MAX, &used)) < 0)
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
        if (lgb_floats(b, "leaf_coeff", n_used) < 0 || lgb_doubles_in_range(b, "leaf_coeff") < 0)
            goto done;
    }
    int categorical = 0;
    for (Py_ssize_t i = 0; i < inner; i++)
        categorical |= (int)(kinds[i] & 1);
    if (num_cat || categorical) {
        Py_ssize_t n_bitsets;
        if (require(b, "cat_boundaries") < 0 || require(b, "cat_threshold") < 0 ||
            lgb_ints(b, "cat_boundaries", num_cat + 1, INT32_MIN, INT32_MAX, &bounds) < 0 ||
            (n_bitsets = lgb_ints(b, "cat_threshold", -1, 0, UINT32_MAX, &bitsets)) < 0)
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
        for (Py_ssize_t i = 0; i < n_bitsets; i++) /* categories a dump lists, one by one */
            *category_bits += __builtin_popcountll((unsigned long long)bitsets[i]);
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
    PyMem_Free(unused);
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
    int64_t deepest = 0, depth = 0, category_bits = 0;
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
        Block block;
        block.what = what;
        failed = read_block(text, start, stop, &block) < 0 ||
                 check_lgb_tree(&block, n_features, &depth, &category_bits) < 0;
        deepest = depth > deepest ? depth : deepest;
    }
    PyBuffer_Release(&view);
    if (failed)
        return NULL;
    return Py_BuildValue("(LL)", (long long)deepest, (long long)category_bits);
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

/* ------------------------------------------------------------------------------- XGBoost */

/* The model document, JSON or UBJSON, as a tree of nodes: a container's items are linked by
 * ``next``; an object's items carry their keys. A typed UBJSON array of numbers stays its
 * bytes (big-endian), read where a check needs them. */
enum { X_NULL, X_BOOL, X_INT, X_BIG, X_FLOAT, X_STR, X_ARRAY, X_OBJECT, X_TYPED };

typedef struct {
    unsigned char kind;
    unsigned char elem; /* X_TYPED: the element's UBJSON marker */
    Py_ssize_t next;    /* the next item of the same container, or -1 */
    const char *key;    /* an object's item: its key (UTF-8) */
    Py_ssize_t klen;
    int64_t i;          /* X_INT, X_BOOL */
    double d;           /* X_FLOAT */
    const char *s;      /* X_STR: UTF-8; X_TYPED: the elements' bytes */
    Py_ssize_t n;       /* X_STR: bytes; X_ARRAY, X_OBJECT, X_TYPED: items */
    Py_ssize_t first;   /* X_ARRAY, X_OBJECT: the first item, or -1 */
} XNode;

typedef struct {
    XNode *nodes;
    Py_ssize_t n, cap, budget;
    const unsigned char *data; /* UBJSON */
    Py_ssize_t len, pos;
} XDoc;

#define MAX_DEPTH 64
#define MAX_CATEGORY (1 << 24) /* XGBoost refuses float32 categories from 2**24 up itself */

static Py_ssize_t
new_node(XDoc *doc, unsigned char kind)
{
    if (doc->n >= doc->budget) {
        /* every honest value takes bytes (a typed array of numbers is one node): a document
         * of empty values (2**30 nulls, a few kB compressed) would take 70 bytes of nodes per
         * byte here before it is refused below */
        bad("more values than %zd bytes of XGBoost's UBJSON hold", doc->len);
        return -1;
    }
    if (doc->n == doc->cap) {
        Py_ssize_t cap = doc->cap ? doc->cap * 2 : 256;
        XNode *grown = PyMem_Realloc(doc->nodes, (size_t)cap * sizeof(XNode));
        if (grown == NULL) {
            PyErr_NoMemory();
            return -1;
        }
        doc->nodes = grown;
        doc->cap = cap;
    }
    XNode *node = &doc->nodes[doc->n];
    memset(node, 0, sizeof *node);
    node->kind = kind;
    node->next = node->first = -1;
    return doc->n++;
}

static int
elem_size(unsigned char marker)
{
    switch (marker) {
    case 'i': case 'U': return 1;
    case 'I': return 2;
    case 'l': case 'd': return 4;
    case 'L': case 'D': return 8;
    default: return 0;
    }
}

static int
is_int_marker(unsigned char marker)
{
    return marker == 'i' || marker == 'U' || marker == 'I' || marker == 'l' || marker == 'L';
}

static uint64_t
big_endian(const unsigned char *p, int size)
{
    uint64_t v = 0;
    for (int k = 0; k < size; k++)
        v = v << 8 | p[k];
    return v;
}

/* A number of the given marker at p: an integer, or (floats) a double in *d. */
static int64_t
read_scalar(unsigned char marker, const unsigned char *p, double *d)
{
    uint64_t v = big_endian(p, elem_size(marker));
    switch (marker) {
    case 'i': return (int8_t)v;
    case 'U': return (uint8_t)v;
    case 'I': return (int16_t)v;
    case 'l': return (int32_t)v;
    case 'L': return (int64_t)v;
    case 'd': {
        uint32_t bits = (uint32_t)v;
        float f;
        memcpy(&f, &bits, sizeof f);
        *d = f;
        return 0;
    }
    default: {
        double f;
        memcpy(&f, &v, sizeof f);
        *d = f;
        return 0;
    }
    }
}

static int
ubj_marker(XDoc *doc, unsigned char *marker)
{
    if (doc->pos >= doc->len) {
        bad("UBJSON data ends early");
        return -1;
    }
    *marker = doc->data[doc->pos++];
    return 0;
}

/* A number where one belongs (a length, a scalar); ``*is_float`` says which. */
static int
ubj_number(XDoc *doc, unsigned char marker, int64_t *i, double *d, int *is_float)
{
    int size = elem_size(marker);
    if (size == 0) {
        bad("UBJSON marker '%c' where a number belongs", marker);
        return -1;
    }
    if (size > doc->len - doc->pos) {
        bad("UBJSON data ends early");
        return -1;
    }
    *is_float = marker == 'd' || marker == 'D';
    *i = read_scalar(marker, doc->data + doc->pos, d);
    doc->pos += size;
    return 0;
}

static int
ubj_length(XDoc *doc, Py_ssize_t *n)
{
    if (doc->len - doc->pos >= 9 && doc->data[doc->pos] == 'L') { /* as XGBoost writes them */
        int64_t v = (int64_t)big_endian(doc->data + doc->pos + 1, 8);
        if (v < 0) {
            bad("a negative UBJSON length");
            return -1;
        }
        doc->pos += 9;
        *n = (Py_ssize_t)v;
        return 0;
    }
    unsigned char marker;
    int64_t i;
    double d;
    int is_float;
    if (ubj_marker(doc, &marker) < 0 || ubj_number(doc, marker, &i, &d, &is_float) < 0)
        return -1;
    if (is_float || i < 0) {
        bad("a negative UBJSON length");
        return -1;
    }
    *n = (Py_ssize_t)i;
    return 0;
}

/* Strict UTF-8, as Python decodes it: no overlong forms, no surrogates, at most U+10FFFF. */
static int
valid_utf8(const unsigned char *s, Py_ssize_t n)
{
    Py_ssize_t i = 0;
    while (i < n && s[i] < 0x80) /* keys are ASCII */
        i++;
    while (i < n) {
        unsigned char c = s[i];
        if (c < 0x80) {
            i++;
            continue;
        }
        int more;
        unsigned char low = 0x80, high = 0xBF;
        if (c >= 0xC2 && c <= 0xDF)
            more = 1;
        else if (c >= 0xE0 && c <= 0xEF) {
            more = 2;
            low = c == 0xE0 ? 0xA0 : 0x80;
            high = c == 0xED ? 0x9F : 0xBF;
        }
        else if (c >= 0xF0 && c <= 0xF4) {
            more = 3;
            low = c == 0xF0 ? 0x90 : 0x80;
            high = c == 0xF4 ? 0x8F : 0xBF;
        }
        else
            return 0;
        if (more > n - i - 1 || s[i + 1] < low || s[i + 1] > high)
            return 0;
        for (int k = 2; k <= more; k++)
            if (s[i + k] < 0x80 || s[i + k] > 0xBF)
                return 0;
        i += more + 1;
    }
    return 1;
}

static int
ubj_text(XDoc *doc, const char **s, Py_ssize_t *n)
{
    if (ubj_length(doc, n) < 0)
        return -1;
    if (*n > doc->len - doc->pos) {
        bad("UBJSON data ends early");
        return -1;
    }
    *s = (const char *)doc->data + doc->pos;
    doc->pos += *n;
    if (!valid_utf8((const unsigned char *)*s, *n)) {
        bad("UBJSON text that is not UTF-8");
        return -1;
    }
    return 0;
}

static int
key_order(const void *a, const void *b)
{
    const XNode *x = *(const XNode *const *)a, *y = *(const XNode *const *)b;
    Py_ssize_t n = x->klen < y->klen ? x->klen : y->klen;
    int c = memcmp(x->key, y->key, (size_t)n);
    return c ? c : (x->klen > y->klen) - (x->klen < y->klen);
}

/* An object's keys are all different: with a key given twice, the check would read one value
 * and XGBoost perhaps the other. */
static int
distinct_keys(XDoc *doc, Py_ssize_t object)
{
    Py_ssize_t count = doc->nodes[object].n;
    if (count < 2)
        return 0;
    if (count <= 32) { /* a tree's object: pairwise, most pairs told apart by length */
        const XNode *few[32];
        Py_ssize_t k = 0;
        for (Py_ssize_t at = doc->nodes[object].first; at >= 0; at = doc->nodes[at].next)
            few[k++] = &doc->nodes[at];
        for (Py_ssize_t i = 1; i < count; i++)
            for (Py_ssize_t j = 0; j < i; j++)
                if (few[i]->klen == few[j]->klen &&
                    memcmp(few[i]->key, few[j]->key, (size_t)few[i]->klen) == 0) {
                    bad("an object gives a key twice");
                    return -1;
                }
        return 0;
    }
    const XNode **items = PyMem_Malloc((size_t)count * sizeof(XNode *));
    if (items == NULL) {
        PyErr_NoMemory();
        return -1;
    }
    Py_ssize_t k = 0;
    for (Py_ssize_t at = doc->nodes[object].first; at >= 0; at = doc->nodes[at].next)
        items[k++] = &doc->nodes[at];
    qsort(items, (size_t)count, sizeof(XNode *), key_order);
    int twice = 0;
    for (k = 1; k < count && !twice; k++)
        twice = key_order(&items[k - 1], &items[k]) == 0;
    PyMem_Free(items);
    if (twice) {
        bad("an object gives a key twice");
        return -1;
    }
    return 0;
}

static Py_ssize_t ubj_value(XDoc *doc, int depth, int marker);

/* Append ``item`` to container ``parent`` (whose last item is *last). */
static void
link_item(XDoc *doc, Py_ssize_t parent, Py_ssize_t *last, Py_ssize_t item)
{
    if (*last < 0)
        doc->nodes[parent].first = item;
    else
        doc->nodes[*last].next = item;
    *last = item;
    doc->nodes[parent].n++;
}

static Py_ssize_t
ubj_array(XDoc *doc, int depth)
{
    Py_ssize_t self = new_node(doc, X_ARRAY), last = -1, n;
    unsigned char marker;
    if (self < 0 || ubj_marker(doc, &marker) < 0)
        return -1;
    if (marker == '$') { /* typed and counted */
        unsigned char kind, hash;
        if (ubj_marker(doc, &kind) < 0 || ubj_marker(doc, &hash) < 0)
            return -1;
        if (hash != '#') {
            bad("a typed UBJSON array without a count");
            return -1;
        }
        if (ubj_length(doc, &n) < 0)
            return -1;
        int size = elem_size(kind);
        if (size) { /* one block of numbers */
            if (n > (doc->len - doc->pos) / size) {
                bad("UBJSON data ends early");
                return -1;
            }
            XNode *node = &doc->nodes[self];
            node->kind = X_TYPED;
            node->elem = kind;
            node->s = (const char *)doc->data + doc->pos;
            node->n = n;
            doc->pos += n * size;
            return self;
        }
        if (kind == 'Z' || kind == 'T' || kind == 'F' || kind == 'N' || n > doc->len - doc->pos) {
            /* elements of no bytes: 2**40 of them from a few bytes ran the parser out of
             * memory */
            bad("a typed UBJSON array of values without data, or past the data");
            return -1;
        }
        for (Py_ssize_t k = 0; k < n; k++) {
            Py_ssize_t item = ubj_value(doc, depth + 1, kind);
            if (item < 0)
                return -1;
            link_item(doc, self, &last, item);
        }
        return self;
    }
    if (marker == '#') { /* counted, every element at least one byte */
        if (ubj_length(doc, &n) < 0)
            return -1;
        if (n > doc->len - doc->pos) {
            bad("a UBJSON array longer than the data");
            return -1;
        }
        for (Py_ssize_t k = 0; k < n; k++) {
            Py_ssize_t item = ubj_value(doc, depth + 1, -1);
            if (item < 0)
                return -1;
            link_item(doc, self, &last, item);
        }
        return self;
    }
    while (marker != ']') {
        Py_ssize_t item = ubj_value(doc, depth + 1, marker);
        if (item < 0 || ubj_marker(doc, &marker) < 0)
            return -1;
        link_item(doc, self, &last, item);
    }
    return self;
}

static Py_ssize_t
ubj_member(XDoc *doc, int depth)
{
    const char *key;
    Py_ssize_t klen;
    if (ubj_text(doc, &key, &klen) < 0)
        return -1;
    Py_ssize_t item = ubj_value(doc, depth + 1, -1);
    if (item < 0)
        return -1;
    doc->nodes[item].key = key;
    doc->nodes[item].klen = klen;
    return item;
}

static Py_ssize_t
ubj_object(XDoc *doc, int depth)
{
    Py_ssize_t self = new_node(doc, X_OBJECT), last = -1;
    unsigned char marker;
    if (self < 0 || ubj_marker(doc, &marker) < 0)
        return -1;
    if (marker == '#') {
        Py_ssize_t n;
        if (ubj_length(doc, &n) < 0)
            return -1;
        if (n > doc->len - doc->pos) {
            bad("a UBJSON object longer than the data");
            return -1;
        }
        for (Py_ssize_t k = 0; k < n; k++) {
            Py_ssize_t item = ubj_member(doc, depth);
            if (item < 0)
                return -1;
            link_item(doc, self, &last, item);
        }
    }
    else {
        while (marker != '}') {
            doc->pos--; /* the marker was the key's length marker */
            Py_ssize_t item = ubj_member(doc, depth);
            if (item < 0 || ubj_marker(doc, &marker) < 0)
                return -1;
            link_item(doc, self, &last, item);
        }
    }
    return distinct_keys(doc, self) < 0 ? -1 : self;
}

/* One value; ``marker`` is its marker when already read (typed arrays), else -1. */
static Py_ssize_t
ubj_value(XDoc *doc, int depth, int marker)
{
    if (depth > MAX_DEPTH) {
        bad("nesting deeper than %d", MAX_DEPTH);
        return -1;
    }
    unsigned char m;
    if (marker >= 0)
        m = (unsigned char)marker;
    else if (ubj_marker(doc, &m) < 0)
        return -1;
    if (elem_size(m)) {
        int64_t i;
        double d = 0;
        int is_float;
        if (ubj_number(doc, m, &i, &d, &is_float) < 0)
            return -1;
        Py_ssize_t self = new_node(doc, is_float ? X_FLOAT : X_INT);
        if (self >= 0) {
            doc->nodes[self].i = i;
            doc->nodes[self].d = d;
        }
        return self;
    }
    switch (m) {
    case 'S':
    case 'H': {
        const char *s;
        Py_ssize_t n;
        if (ubj_text(doc, &s, &n) < 0)
            return -1;
        Py_ssize_t self = new_node(doc, X_STR);
        if (self >= 0) {
            doc->nodes[self].s = s;
            doc->nodes[self].n = n;
        }
        return self;
    }
    case 'C': {
        if (doc->pos >= doc->len) {
            bad("UBJSON data ends early");
            return -1;
        }
        Py_ssize_t self = new_node(doc, X_STR); /* one character: counts as text */
        if (self >= 0) {
            doc->nodes[self].s = (const char *)doc->data + doc->pos;
            doc->nodes[self].n = 1;
            doc->pos++;
        }
        return self;
    }
    case 'T':
    case 'F': {
        Py_ssize_t self = new_node(doc, X_BOOL);
        if (self >= 0)
            doc->nodes[self].i = m == 'T';
        return self;
    }
    case 'Z':
        return new_node(doc, X_NULL);
    case '[':
        return ubj_array(doc, depth);
    case '{':
        return ubj_object(doc, depth);
    default:
        bad("unknown UBJSON marker 0x%x at byte %zd", m, doc->pos - 1);
        return -1;
    }
}

/* A document parsed by Python's json module (dicts, lists, str, int, float, bool, None). */
static Py_ssize_t
py_value(XDoc *doc, PyObject *obj, int depth)
{
    if (depth > MAX_DEPTH) {
        bad("nesting deeper than %d", MAX_DEPTH);
        return -1;
    }
    Py_ssize_t self;
    if (obj == Py_None)
        return new_node(doc, X_NULL);
    if (PyBool_Check(obj)) {
        if ((self = new_node(doc, X_BOOL)) >= 0)
            doc->nodes[self].i = obj == Py_True;
        return self;
    }
    if (PyLong_Check(obj)) {
        int overflow;
        long long v = PyLong_AsLongLongAndOverflow(obj, &overflow);
        if (v == -1 && PyErr_Occurred())
            return -1;
        if ((self = new_node(doc, overflow ? X_BIG : X_INT)) >= 0)
            doc->nodes[self].i = overflow ? overflow : v;
        return self;
    }
    if (PyFloat_Check(obj)) {
        if ((self = new_node(doc, X_FLOAT)) >= 0)
            doc->nodes[self].d = PyFloat_AS_DOUBLE(obj);
        return self;
    }
    if (PyUnicode_Check(obj)) {
        Py_ssize_t n;
        const char *s = PyUnicode_AsUTF8AndSize(obj, &n);
        if (s == NULL) { /* a lone surrogate (json lets \ud800 through): not UTF-8 */
            PyErr_Clear();
            bad("text that is not UTF-8");
            return -1;
        }
        if ((self = new_node(doc, X_STR)) >= 0) {
            doc->nodes[self].s = s;
            doc->nodes[self].n = n;
        }
        return self;
    }
    if (PyList_Check(obj)) {
        if ((self = new_node(doc, X_ARRAY)) < 0)
            return -1;
        Py_ssize_t last = -1;
        for (Py_ssize_t k = 0; k < PyList_GET_SIZE(obj); k++) {
            Py_ssize_t item = py_value(doc, PyList_GET_ITEM(obj, k), depth + 1);
            if (item < 0)
                return -1;
            link_item(doc, self, &last, item);
        }
        return self;
    }
    if (PyDict_Check(obj)) {
        if ((self = new_node(doc, X_OBJECT)) < 0)
            return -1;
        Py_ssize_t last = -1, at = 0;
        PyObject *key, *value;
        while (PyDict_Next(obj, &at, &key, &value)) {
            Py_ssize_t klen;
            const char *k = PyUnicode_Check(key) ? PyUnicode_AsUTF8AndSize(key, &klen) : NULL;
            if (k == NULL) {
                PyErr_Clear();
                bad("an object key that is not UTF-8 text");
                return -1;
            }
            Py_ssize_t item = py_value(doc, value, depth + 1);
            if (item < 0)
                return -1;
            doc->nodes[item].key = k;
            doc->nodes[item].klen = klen;
            link_item(doc, self, &last, item);
        }
        return self;
    }
    bad("a %s where JSON values belong", Py_TYPE(obj)->tp_name);
    return -1;
}

/* -- reading the document --------------------------------------------------------------- */

typedef struct {
    XDoc *doc;
    char what[48]; /* "tree 12" */
} Ctx;

static const XNode *
node_at(const XDoc *doc, Py_ssize_t at)
{
    return at < 0 ? NULL : &doc->nodes[at];
}

static const XNode *
member(const XDoc *doc, const XNode *object, const char *key)
{
    if (object == NULL || object->kind != X_OBJECT)
        return NULL;
    Py_ssize_t klen = (Py_ssize_t)strlen(key);
    for (Py_ssize_t at = object->first; at >= 0; at = doc->nodes[at].next) {
        const XNode *item = &doc->nodes[at];
        if (item->klen == klen && item->key[0] == key[0] &&
            memcmp(item->key, key, (size_t)klen) == 0)
            return item;
    }
    return NULL;
}

/* _get: the member, or "WHAT has no 'KEY'" */
static const XNode *
get(const XDoc *doc, const XNode *object, const char *key, const char *what)
{
    const XNode *found = member(doc, object, key);
    if (found == NULL)
        bad("%s has no '%s'", what, key);
    return found;
}

static int
is_seq(const XNode *node)
{
    return node != NULL && (node->kind == X_ARRAY || node->kind == X_TYPED);
}

static int
text_is(const XNode *node, const char *text)
{
    Py_ssize_t n = (Py_ssize_t)strlen(text);
    return node != NULL && node->kind == X_STR && node->n == n &&
           memcmp(node->s, text, (size_t)n) == 0;
}

/* A value as Python would show it in a message. */
static PyObject *
shown(const XNode *node)
{
    switch (node->kind) {
    case X_NULL: return PyUnicode_FromString("None");
    case X_BOOL: return PyUnicode_FromString(node->i ? "True" : "False");
    case X_INT: return PyUnicode_FromFormat("%lld", (long long)node->i);
    case X_BIG: return PyUnicode_FromString(node->i > 0 ? "(over 2**63)" : "(under -2**63)");
    case X_FLOAT: {
        PyObject *f = PyFloat_FromDouble(node->d);
        PyObject *r = f ? PyObject_Repr(f) : NULL;
        Py_XDECREF(f);
        return r;
    }
    case X_STR: {
        PyObject *s = PyUnicode_DecodeUTF8(node->s, node->n < 200 ? node->n : 200, "replace");
        PyObject *r = s ? PyObject_Repr(s) : NULL;
        Py_XDECREF(s);
        return r;
    }
    case X_OBJECT: return PyUnicode_FromString("an object");
    default: return PyUnicode_FromString("a list");
    }
}

/* _int: a count or index, written as a number or (in model parameters) as a decimal string,
 * within low..high. */
static int
read_count(const XNode *node, const char *what, const char *key, int64_t low, int64_t high,
           int64_t *out)
{
    int64_t v = 0;
    int ok = 0;
    if (node->kind == X_INT) {
        v = node->i;
        ok = 1;
    }
    else if (node->kind == X_STR) {
        /* int(text): digits with an optional sign, underscores and surrounding spaces */
        char *copy = PyMem_Malloc((size_t)node->n + 1), *end = NULL;
        if (copy == NULL) {
            PyErr_NoMemory();
            return -1;
        }
        memcpy(copy, node->s, (size_t)node->n);
        copy[node->n] = 0;
        PyObject *number = strlen(copy) == (size_t)node->n ? PyLong_FromString(copy, &end, 10)
                                                           : NULL;
        if (number != NULL && *end != 0) /* trailing text */
            Py_CLEAR(number);
        PyMem_Free(copy);
        if (number == NULL) {
            PyErr_Clear();
            PyObject *text = shown(node);
            if (text != NULL) {
                bad("%s%s%s is %U, not an integer", what, key ? "'s " : "", key ? key : "", text);
                Py_DECREF(text);
            }
            return -1;
        }
        int overflow;
        v = PyLong_AsLongLongAndOverflow(number, &overflow);
        Py_DECREF(number);
        ok = !overflow;
    }
    if (!ok || v < low || v > high) {
        PyObject *text = shown(node);
        if (text != NULL) {
            bad("%s%s%s is %U, outside %lld..%lld", what, key ? "'s " : "", key ? key : "", text,
                (long long)low, (long long)high);
            Py_DECREF(text);
        }
        return -1;
    }
    *out = v;
    return 0;
}

/* read_count of an optional member, with its default */
static int
read_count_or(const XDoc *doc, const XNode *object, const char *key, int64_t fallback,
              const char *what, int64_t low, int64_t high, int64_t *out)
{
    const XNode *node = member(doc, object, key);
    if (node == NULL) {
        if (fallback < low || fallback > high) {
            bad("%s is %lld, outside %lld..%lld", what, (long long)fallback, (long long)low,
                (long long)high);
            return -1;
        }
        *out = fallback;
        return 0;
    }
    return read_count(node, what, NULL, low, high, out);
}

/* _ints: a list of integers (typed UBJSON integers, or a list of integer values) of
 * ``length`` items (any when negative), as a fresh array (PyMem_Free it; NULL if empty). */
static int
read_ints(const XDoc *doc, const XNode *node, const char *what, const char *key,
          Py_ssize_t length, int64_t **out, Py_ssize_t *count)
{
    const char *sep = key ? "'s " : "";
    key = key ? key : "";
    *out = NULL;
    if (!is_seq(node) || (length >= 0 && node->n != length)) {
        if (is_seq(node))
            bad("%s%s%s has %zd values, not %zd", what, sep, key, node->n, length);
        else
            bad("%s%s%s is not a list of integers", what, sep, key);
        return -1;
    }
    Py_ssize_t n = node->n;
    *count = n;
    if (n == 0)
        return 0;
    if (node->kind == X_TYPED && !is_int_marker(node->elem)) {
        bad("%s%s%s holds values that are not integers", what, sep, key);
        return -1;
    }
    int64_t *values = PyMem_Malloc((size_t)n * sizeof(int64_t));
    if (values == NULL) {
        PyErr_NoMemory();
        return -1;
    }
    if (node->kind == X_TYPED) {
        const unsigned char *p = (const unsigned char *)node->s;
        switch (node->elem) { /* big-endian, one loop per width */
        case 'i':
            for (Py_ssize_t k = 0; k < n; k++)
                values[k] = (int8_t)p[k];
            break;
        case 'U':
            for (Py_ssize_t k = 0; k < n; k++)
                values[k] = p[k];
            break;
        case 'I':
            for (Py_ssize_t k = 0; k < n; k++)
                values[k] = (int16_t)(uint16_t)(p[2 * k] << 8 | p[2 * k + 1]);
            break;
        case 'l':
            for (Py_ssize_t k = 0; k < n; k++)
                values[k] = (int32_t)((uint32_t)p[4 * k] << 24 | (uint32_t)p[4 * k + 1] << 16 |
                                      (uint32_t)p[4 * k + 2] << 8 | p[4 * k + 3]);
            break;
        default: /* 'L' */
            for (Py_ssize_t k = 0; k < n; k++)
                values[k] = (int64_t)big_endian(p + 8 * k, 8);
        }
    }
    else {
        Py_ssize_t k = 0;
        for (Py_ssize_t at = node->first; at >= 0; at = doc->nodes[at].next) {
            const XNode *item = &doc->nodes[at];
            if (item->kind != X_INT) {
                PyMem_Free(values);
                bad("%s%s%s holds values that are not integers", what, sep, key);
                return -1;
            }
            values[k++] = item->i;
        }
    }
    *out = values;
    return 0;
}

static int64_t
xgb_child(const void *tree, int64_t node, int side)
{
    const Links *links = tree; /* children are nodes; a leaf's left child is -1 */
    int64_t c = side ? links->right[node] : links->left[node];
    return links->left[c] == -1 ? -1 : c;
}

/* _check_tree: tree ``k``; sets its leaf vector size and its depth. */
static int
check_xgb_tree(const XDoc *doc, const XNode *tree, Py_ssize_t k, int64_t num_feature,
               int64_t *leaf_size_out, int64_t *depth, int64_t *category_bits)
{
    char what[32] = "tree ", digits[24];
    int nd = 0;
    for (Py_ssize_t v = k; nd == 0 || v > 0; v /= 10) /* snprintf costs more than the tree */
        digits[nd++] = (char)('0' + v % 10);
    for (int d = 0; d < nd; d++)
        what[5 + d] = digits[nd - 1 - d];
    what[5 + nd] = 0;
    int64_t *left = NULL, *right = NULL, *features = NULL, *kinds = NULL, *categories = NULL,
            *cat_nodes = NULL, *segments = NULL, *sizes = NULL, *parents = NULL;
    unsigned char *seen = NULL;
    int status = -1;
    int64_t n, leaf_size;
    Py_ssize_t count, n_categories = 0, n_cat_nodes = 0, n_segments = 0, n_sizes = 0;
    const XNode *param = get(doc, tree, "tree_param", what), *node;
    int64_t id;
    /* XGBoost puts each tree where its id says: two of one id left a slot empty */
    if (param == NULL || (node = get(doc, tree, "id", what)) == NULL ||
        read_count(node, what, "id", 0, INT32_MAX, &id) < 0)
        goto done;
    if (id != k) {
        bad("%s has the id %lld", what, (long long)id);
        goto done;
    }
    if ((node = get(doc, param, "num_nodes", what)) == NULL)
        goto done;
    if (read_count(node, what, "num_nodes", 1, INT32_MAX, &n) < 0)
        goto done;
    if ((node = get(doc, param, "size_leaf_vector", what)) == NULL)
        goto done;
    if (read_count(node, what, "size_leaf_vector", 0, INT32_MAX, &leaf_size) < 0)
        goto done;
    static const char *const linked[] = {"left_children", "right_children", "split_indices"};
    int64_t **arrays[] = {&left, &right, &features};
    for (int a = 0; a < 3; a++) {
        if ((node = get(doc, tree, linked[a], what)) == NULL)
            goto done;
        if (read_ints(doc, node, what, linked[a], n, arrays[a], &count) < 0)
            goto done;
    }
    /* (a vector-leaf tree without its statistics, or with fewer than one a node, crashed
     * load_model or had it read past them: XGBoost checks their lengths on scalar trees only) */
    static const char *const per_node[] = {"split_conditions", "default_left", "split_type",
                                           "loss_changes", "sum_hessian"};
    for (int a = 0; a < 5; a++) {
        if ((node = get(doc, tree, per_node[a], what)) == NULL)
            goto done;
        if (!is_seq(node) || node->n != n) {
            bad("%s's %s does not have one value per node", what, per_node[a]);
            goto done;
        }
    }
    /* XGBoost indexes its nodes by their parents as it loads them */
    if ((node = get(doc, tree, "parents", what)) == NULL ||
        read_ints(doc, node, what, "parents", n, &parents, &count) < 0)
        goto done;
    /* left, right and features now have n values each: n is backed by the data */
    if (leaf_size > 1) {
        /* a vector-leaf tree (multi_output_tree): a leaf's right child is its row of
         * leaf_weights */
        const XNode *weights = get(doc, tree, "leaf_weights", what);
        if (weights == NULL)
            goto done;
        if (!is_seq(weights) || weights->n % leaf_size) {
            bad("%s's leaf_weights do not come in rows of %lld", what, (long long)leaf_size);
            goto done;
        }
        int64_t rows = weights->n / leaf_size;
        for (int64_t i = 0; i < n; i++)
            if (left[i] == -1 && (right[i] < 0 || right[i] >= rows)) {
                bad("%s has a leaf outside its %lld leaf weight rows", what, (long long)rows);
                goto done;
            }
    }
    else {
        for (int64_t i = 0; i < n; i++)
            if ((left[i] == -1) != (right[i] == -1)) {
                bad("%s has a node with one child", what);
                goto done;
            }
    }
    seen = PyMem_Calloc((size_t)n, 1);
    if (seen == NULL) {
        PyErr_NoMemory();
        goto done;
    }
    for (int64_t i = 0; i < n; i++) { /* the inner nodes' children */
        if (left[i] == -1)
            continue;
        if (left[i] < 1 || left[i] >= n || right[i] < 1 || right[i] >= n) {
            bad("%s has a child index outside 1..%lld", what, (long long)(n - 1));
            goto done;
        }
    }
    /* each node is the child of at most one node, and the root of none: no cycle is
     * reachable */
    for (int64_t i = 0; i < n; i++) {
        if (left[i] == -1)
            continue;
        if (seen[left[i]]++ || seen[right[i]]++) {
            bad("%s has a node reached twice (a cycle or a shared child)", what);
            goto done;
        }
    }
    /* the root's parent is none (2**31-1, or -1 in a vector-leaf tree); a child's parent is
     * the node that links to it; a node no node links to (deleted) names a node or none */
    memset(seen, 0, (size_t)n);
    seen[0] = 1;
    int parented = parents[0] == INT32_MAX || parents[0] == -1;
    for (int64_t i = 0; i < n && parented; i++)
        if (left[i] != -1) {
            parented = parents[left[i]] == i && parents[right[i]] == i;
            seen[left[i]] = seen[right[i]] = 1;
        }
    for (int64_t i = 0; i < n && parented; i++)
        parented = seen[i] || (parents[i] >= -1 && parents[i] < n) || parents[i] == INT32_MAX;
    if (!parented) {
        bad("%s's parents do not match its child links", what);
        goto done;
    }
    Links links = {left, right};
    *depth = 0;
    if (left[0] != -1 && tree_depth(&links, xgb_child, n, depth) < 0)
        goto done;
    for (int64_t i = 0; i < n; i++)
        if (left[i] != -1 && (features[i] < 0 || features[i] >= num_feature)) {
            bad("%s splits on a feature outside 0..%lld", what, (long long)(num_feature - 1));
            goto done;
        }
    if (read_ints(doc, member(doc, tree, "split_type"), what, "split_type", n, &kinds, &count) < 0)
        goto done;
    for (int64_t i = 0; i < n; i++)
        if (kinds[i] != 0 && kinds[i] != 1) {
            bad("%s has a split type other than numerical (0) or categorical (1)", what);
            goto done;
        }
    static const char *const cat_keys[] = {"categories", "categories_nodes",
                                           "categories_segments", "categories_sizes"};
    int64_t **cat_arrays[] = {&categories, &cat_nodes, &segments, &sizes};
    Py_ssize_t *cat_counts[] = {&n_categories, &n_cat_nodes, &n_segments, &n_sizes};
    for (int a = 0; a < 4; a++) {
        const XNode *listed = member(doc, tree, cat_keys[a]);
        if (listed != NULL &&
            read_ints(doc, listed, what, cat_keys[a], -1, cat_arrays[a], cat_counts[a]) < 0)
            goto done;
    }
    if (n_cat_nodes != n_segments || n_segments != n_sizes) {
        bad("%s's categorical splits disagree in number", what);
        goto done;
    }
    memset(seen, 0, (size_t)n); /* now: the nodes that list categories */
    for (Py_ssize_t c = 0; c < n_cat_nodes; c++) {
        if (cat_nodes[c] < 0 || cat_nodes[c] >= n || kinds[cat_nodes[c]] != 1) {
            bad("%s lists categories for a node that is no categorical split", what);
            goto done;
        }
        seen[cat_nodes[c]] = 1;
    }
    for (Py_ssize_t c = 0; c < n_cat_nodes; c++)
        if (segments[c] < 0 || sizes[c] < 0 || segments[c] > n_categories - sizes[c]) {
            bad("%s has a category segment past its category list", what);
            goto done;
        }
    for (int64_t i = 0; i < n; i++)
        if (left[i] != -1 && kinds[i] == 1 && !seen[i]) {
            bad("%s has a categorical split without categories", what);
            goto done;
        }
    for (Py_ssize_t c = 0; c < n_cat_nodes; c++) { /* a bitset up to each split's largest */
        int64_t largest = -1;
        for (int64_t j = segments[c]; j < segments[c] + sizes[c]; j++)
            largest = categories[j] > largest ? categories[j] : largest;
        *category_bits += largest + 1;
    }
    for (Py_ssize_t c = 0; c < n_categories; c++)
        if (categories[c] < 0 || categories[c] >= MAX_CATEGORY) {
            bad("%s has a category outside 0..%d", what, MAX_CATEGORY - 1);
            goto done;
        }
    const XNode *weights = get(doc, tree, "base_weights", what);
    if (weights == NULL)
        goto done;
    if (!is_seq(weights) || weights->n != n * (leaf_size > 1 ? leaf_size : 1)) {
        bad("%s's base_weights do not match its nodes", what);
        goto done;
    }
    *leaf_size_out = leaf_size;
    status = 0;
done:
    PyMem_Free(left);
    PyMem_Free(right);
    PyMem_Free(features);
    PyMem_Free(kinds);
    PyMem_Free(categories);
    PyMem_Free(cat_nodes);
    PyMem_Free(segments);
    PyMem_Free(sizes);
    PyMem_Free(parents);
    PyMem_Free(seen);
    return status;
}

/* XGBoost 3's category encoder (gbtree model "cats"): per feature, its categories (offsets
 * into UTF-8 bytes, or values of a numeric type) and the order that sorts them; predict indexes
 * by all of these without looking. */
static int
check_categories(const XDoc *doc, const XNode *cats, int64_t num_feature)
{
    if (cats == NULL || cats->kind == X_NULL)
        return 0;
    int64_t *segments = NULL, *order = NULL, *offsets = NULL;
    Py_ssize_t n_segments, n_order, n_offsets;
    int status = -1;
    const XNode *enc = get(doc, cats, "enc", "the category encoder"), *node;
    if (enc == NULL || (node = get(doc, cats, "feature_segments", "the category encoder")) == NULL ||
        read_ints(doc, node, "the category encoder", "feature_segments", -1, &segments,
                  &n_segments) < 0 ||
        (node = get(doc, cats, "sorted_idx", "the category encoder")) == NULL ||
        read_ints(doc, node, "the category encoder", "sorted_idx", -1, &order, &n_order) < 0)
        goto done;
    if (enc->kind == X_ARRAY && enc->n == 0 && n_segments == 0 && n_order == 0) {
        status = 0; /* no categorical feature */
        goto done;
    }
    if (enc->kind != X_ARRAY || enc->n != num_feature || n_segments != enc->n + 1) {
        bad("the category encoder does not describe the %lld features", (long long)num_feature);
        goto done;
    }
    int split = segments[0] == 0 && segments[n_segments - 1] == n_order;
    for (Py_ssize_t f = 1; f < n_segments && split; f++)
        split = segments[f] >= segments[f - 1];
    if (!split) {
        bad("the category encoder's feature_segments do not split its sorted_idx");
        goto done;
    }
    Py_ssize_t f = 0;
    for (Py_ssize_t at = enc->first; at >= 0; at = doc->nodes[at].next, f++) {
        const XNode *feature = &doc->nodes[at];
        int64_t count = segments[f + 1] - segments[f], described = -1;
        for (int64_t i = segments[f]; i < segments[f + 1]; i++)
            if (order[i] < 0 || order[i] >= count) {
                bad("the category encoder's sorted_idx points past feature %zd's categories", f);
                goto done;
            }
        const XNode *values = member(doc, feature, "values"), *listed;
        if (!is_seq(values)) {
            bad("the category encoder has no values for feature %zd", f);
            goto done;
        }
        if ((listed = member(doc, feature, "offsets")) != NULL) { /* text: offsets in bytes */
            PyMem_Free(offsets);
            offsets = NULL;
            if (read_ints(doc, listed, "the category encoder", "offsets", -1, &offsets,
                          &n_offsets) < 0)
                goto done;
            int bounded = n_offsets == 0 ? values->n == 0
                                         : offsets[0] == 0 && offsets[n_offsets - 1] == values->n;
            for (Py_ssize_t i = 1; i < n_offsets && bounded; i++)
                bounded = offsets[i] >= offsets[i - 1];
            if (!bounded) {
                bad("the category encoder's offsets for feature %zd do not split its text", f);
                goto done;
            }
            described = n_offsets ? n_offsets - 1 : 0;
        }
        else if ((listed = member(doc, feature, "type")) != NULL) { /* numbers of a type */
            int64_t type;
            if (read_count(listed, "the category encoder", "type", 0, 63, &type) < 0)
                goto done;
            described = values->n;
        }
        if (described != count) {
            bad("the category encoder lists %lld categories for feature %zd, its segment %lld",
                (long long)described, f, (long long)count);
            goto done;
        }
    }
    status = 0;
done:
    PyMem_Free(segments);
    PyMem_Free(order);
    PyMem_Free(offsets);
    return status;
}

static int64_t
max3(int64_t a, int64_t b, int64_t c)
{
    int64_t m = a > b ? a : b;
    return m > c ? m : c;
}

/* check_model in _xgb_check.py, on the parsed document; sets the width and the number of
 * feature names (-1: no list) for the size bound, which the caller applies. */
static int
check_xgb_document(const XDoc *doc, const XNode *root, int64_t *num_feature, Py_ssize_t *names,
                   int64_t *deepest, int64_t *category_bits)
{
    int64_t num_class, num_target, *info = NULL, *indptr = NULL, *leaf_sizes = NULL;
    int status = -1;
    const XNode *learner = get(doc, root, "learner", "the model"), *param, *node;
    if (learner == NULL || (param = get(doc, learner, "learner_model_param", "the learner")) == NULL ||
        (node = get(doc, param, "num_feature", "the learner")) == NULL ||
        read_count(node, "num_feature", NULL, 0, INT32_MAX, num_feature) < 0)
        return -1;
    const XNode *listed = member(doc, learner, "feature_names");
    *names = is_seq(listed) ? listed->n : -1;
    if (read_count_or(doc, param, "num_class", 0, "num_class", 0, INT32_MAX, &num_class) < 0 ||
        read_count_or(doc, param, "num_target", 1, "num_target", 1, INT32_MAX, &num_target) < 0)
        return -1;
    int64_t outputs = max3(num_class, num_target, 1);
    const XNode *scores = member(doc, param, "base_score");
    if (scores != NULL && scores->kind == X_STR && scores->n > 0 && scores->s[0] == '[') {
        /* XGBoost 3 keeps one base score per output, as a list in text */
        Py_ssize_t commas = 0;
        for (Py_ssize_t i = 0; i < scores->n; i++)
            commas += scores->s[i] == ',';
        if (commas + 1 != 1 && commas + 1 != outputs) {
            bad("base_score does not have %lld values", (long long)outputs);
            return -1;
        }
    }
    const XNode *softmax = member(doc, member(doc, learner, "objective"),
                                  "softmax_multiclass_param");
    const XNode *classes = member(doc, softmax, "num_class");
    if (classes != NULL && classes->kind != X_NULL) {
        int64_t declared;
        if (read_count(classes, "the objective's num_class", NULL, 0, INT32_MAX, &declared) < 0)
            return -1;
        if (declared != num_class) {
            bad("the objective's num_class is not the model's %lld", (long long)num_class);
            return -1;
        }
    }
    static const char *const described[] = {"feature_names", "feature_types"};
    for (int a = 0; a < 2; a++) {
        listed = member(doc, learner, described[a]);
        if (listed != NULL && listed->kind != X_NULL &&
            (!is_seq(listed) || (listed->n != 0 && listed->n != *num_feature))) {
            bad("%s does not list the %lld features", described[a], (long long)*num_feature);
            return -1;
        }
    }
    const XNode *booster = get(doc, learner, "gradient_booster", "the learner"), *name;
    if (booster == NULL || (name = get(doc, booster, "name", "the gradient booster")) == NULL)
        return -1;
    if (text_is(name, "gblinear")) {
        const XNode *model = get(doc, booster, "model", "gblinear"), *weights;
        if (model == NULL || (weights = get(doc, model, "weights", "gblinear")) == NULL)
            return -1;
        if (!is_seq(weights) || weights->n != (*num_feature + 1) * outputs) {
            bad("gblinear has %zd weights for %lld features", is_seq(weights) ? weights->n : 0,
                (long long)*num_feature);
            return -1;
        }
        return 0;
    }
    int dart = text_is(name, "dart");
    if (dart)
        booster = get(doc, booster, "gbtree", "dart");
    else if (!text_is(name, "gbtree")) {
        PyObject *text = shown(name);
        if (text != NULL) {
            bad("gradient booster %U", text);
            Py_DECREF(text);
        }
        return -1;
    }
    const XNode *model, *trees, *params;
    if (booster == NULL || (model = get(doc, booster, "model", "gbtree")) == NULL ||
        (trees = get(doc, model, "trees", "gbtree")) == NULL)
        return -1;
    if (trees->kind != X_ARRAY) {
        bad("its trees are not a list");
        return -1;
    }
    Py_ssize_t n_trees = trees->n, count;
    if ((params = get(doc, model, "gbtree_model_param", "gbtree")) == NULL)
        return -1;
    if (params->kind != X_OBJECT) {
        bad("gbtree's gbtree_model_param is not an object");
        return -1;
    }
    int64_t stored, parallel;
    if (read_count_or(doc, params, "num_trees", n_trees, "num_trees", 0, INT32_MAX, &stored) < 0)
        return -1;
    if (stored != n_trees) {
        bad("num_trees says %lld but %zd are stored", (long long)stored, n_trees);
        return -1;
    }
    if (read_count_or(doc, params, "num_parallel_tree", 1, "num_parallel_tree", 1,
                      n_trees > 1 ? n_trees : 1, &parallel) < 0)
        return -1;
    leaf_sizes = PyMem_Malloc((size_t)(n_trees ? n_trees : 1) * sizeof(int64_t));
    if (leaf_sizes == NULL) {
        PyErr_NoMemory();
        return -1;
    }
    Py_ssize_t k = 0;
    int64_t widest = 1;
    for (Py_ssize_t at = trees->first; at >= 0; at = doc->nodes[at].next, k++) {
        int64_t depth = 0;
        if (check_xgb_tree(doc, &doc->nodes[at], k, *num_feature, &leaf_sizes[k], &depth,
                           category_bits) < 0)
            goto done;
        widest = leaf_sizes[k] > widest ? leaf_sizes[k] : widest;
        *deepest = depth > *deepest ? depth : *deepest;
    }
    int64_t width = num_class > num_target ? num_class : num_target;
    for (k = 0; k < n_trees; k++)
        if (leaf_sizes[k] > 1 && leaf_sizes[k] != width) {
            /* XGBoost writes a vector leaf's values into one output per class or target: a
             * wider one overran the output buffer (heap corruption) */
            bad("a tree's leaf vector is not %lld wide (one value per class or target)",
                (long long)width);
            goto done;
        }
    /* an output per class or target: as many as the trees (or a tree's leaf vector) fill */
    int64_t fillable = max3(n_trees, widest, 1);
    if (num_class > fillable || num_target > fillable) {
        bad("num_class=%lld, num_target=%lld for %zd trees", (long long)num_class,
            (long long)num_target, n_trees);
        goto done;
    }
    if (check_categories(doc, member(doc, model, "cats"), *num_feature) < 0)
        goto done;
    if ((node = get(doc, model, "tree_info", "gbtree")) == NULL ||
        read_ints(doc, node, "tree_info", NULL, n_trees, &info, &count) < 0)
        goto done;
    for (k = 0; k < n_trees; k++)
        if (info[k] < 0 || info[k] >= outputs) {
            bad("tree_info assigns a tree to a class or target the model does not have");
            goto done;
        }
    node = member(doc, model, "iteration_indptr");
    Py_ssize_t rounds = 2;
    int64_t fallback[2] = {0, n_trees};
    const int64_t *bounds = fallback;
    if (node != NULL) {
        if (read_ints(doc, node, "iteration_indptr", NULL, -1, &indptr, &rounds) < 0)
            goto done;
        bounds = indptr;
    }
    int split = rounds >= 1 && bounds[0] == 0 && bounds[rounds - 1] == n_trees;
    for (k = 1; k < rounds && split; k++)
        split = bounds[k] >= bounds[k - 1];
    if (!split) {
        bad("iteration_indptr does not split the trees into rounds");
        goto done;
    }
    /* the wrappers predict with the rounds up to best_iteration; XGBoost takes the range as
     * given (a negative end read before its trees) */
    const XNode *best = member(doc, member(doc, learner, "attributes"), "best_iteration");
    int64_t best_round;
    if (best != NULL &&
        read_count(best, "the learner's best_iteration", NULL, 0, rounds - 2, &best_round) < 0)
        goto done;
    if (dart) {
        const XNode *drops = get(doc, get(doc, learner, "gradient_booster", "the learner"),
                                 "weight_drop", "dart");
        if (drops == NULL)
            goto done;
        if (!is_seq(drops) || drops->n != n_trees) {
            bad("dart's weight_drop does not have one weight per tree");
            goto done;
        }
    }
    status = 0;
done:
    PyMem_Free(info);
    PyMem_Free(indptr);
    PyMem_Free(leaf_sizes);
    return status;
}

static PyObject *
xgb_check(PyObject *self, PyObject *arg)
{
    XDoc doc = {NULL, 0, 0, PY_SSIZE_T_MAX, NULL, 0, 0};
    Py_buffer view = {NULL};
    Py_ssize_t root;
    int64_t num_feature = 0;
    Py_ssize_t names = -1;
    PyObject *result = NULL;
    if (PyDict_Check(arg))
        root = py_value(&doc, arg, 0);
    else {
        if (buffer_arg(arg, &view) < 0)
            return NULL;
        doc.data = view.buf;
        doc.len = view.len;
        doc.budget = view.len / 8 + 64;
        root = ubj_value(&doc, 0, -1);
        if (root >= 0 && doc.pos != doc.len) {
            bad("%zd bytes follow the UBJSON document", doc.len - doc.pos);
            root = -1;
        }
    }
    int64_t deepest = 0, category_bits = 0;
    if (root >= 0 && check_xgb_document(&doc, node_at(&doc, root), &num_feature, &names,
                                        &deepest, &category_bits) == 0)
        result = Py_BuildValue("(LnLL)", (long long)num_feature, names, (long long)deepest,
                               (long long)category_bits);
    if (view.obj != NULL)
        PyBuffer_Release(&view);
    PyMem_Free(doc.nodes);
    return result;
}

static PyMethodDef methods[] = {
    {"lgb_tree_starts", lgb_tree_starts, METH_O,
     "lgb_tree_starts(text)\n--\n\n"
     "The offsets of a LightGBM model text's tree headers, whether they number the trees in "
     "order, and where its 'end of trees' line starts (the newline before it; -1: none); "
     "ValueError for a line starting with 'Tree' that is no header."},
    {"lgb_trees", (PyCFunction)(void (*)(void))lgb_trees, METH_FASTCALL,
     "lgb_trees(text, bounds, n_features)\n--\n\n"
     "Check each tree text[bounds[k]:bounds[k + 1]] of a LightGBM model text; return the "
     "depth of the deepest and the number of categories its categorical splits list (bits "
     "set); ValueError saying what is wrong with the first bad one."},
    {"xgb_check", xgb_check, METH_O,
     "xgb_check(document)\n--\n\n"
     "Check an XGBoost model document: UBJSON bytes, or a dict parsed from its JSON. Returns "
     "(num_feature, the number of feature names or -1, the deepest tree's depth, the bits of "
     "its categorical splits' bitsets) for the size bounds; ValueError saying what is wrong "
     "otherwise."},
    {NULL, NULL, 0, NULL}};

static struct PyModuleDef moduledef = {
    PyModuleDef_HEAD_INIT, "amber.handlers._treecheck",
    "Structural checks of LightGBM and XGBoost model files before their own parsers read them.",
    -1, methods};

PyMODINIT_FUNC
PyInit__treecheck(void)
{
    init_number_scan();
    return PyModule_Create(&moduledef);
}
