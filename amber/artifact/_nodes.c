/* Decoding of the "nodes-lz4" codec: a scikit-learn decision tree's node array rebuilt from
 * the fields that cannot be derived (amber/artifact/_treecodec.py encodes; docs/FORMAT.md has the
 * layout).
 *
 * A tree built depth first lists its nodes in preorder: a split node's left child is the next
 * node, its right child the node after its left subtree, and its sample counts are the sums of
 * its children's. So the node array (64 bytes a node) is stored as planes: which nodes are
 * leaves (one bit each), the split nodes' features and thresholds, every node's impurity, the
 * leaves' sample counts and weights, the missing-value directions and the records' padding.
 * Leaves' children (-1), feature (-2) and threshold (-2.0) are implied.
 *
 * The planes come from a file: every length is checked against the node count before it is
 * read, and the leaf bits must describe exactly one whole binary tree, else ValueError (which
 * the caller reports as an IntegrityError). Output fields are little-endian, as written.
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>

#include <stdint.h>
#include <string.h>

#define NODE_SIZE 64
#define TREE_LEAF (-1)
#define TREE_UNDEFINED (-2)

#if defined(__BYTE_ORDER__) && __BYTE_ORDER__ == __ORDER_LITTLE_ENDIAN__
#define LITTLE_ENDIAN_HOST 1
#else
#define LITTLE_ENDIAN_HOST 0
#endif

static inline void
st64(uint8_t *p, uint64_t v)
{
    if (LITTLE_ENDIAN_HOST) {
        memcpy(p, &v, 8);
        return;
    }
    for (int k = 0; k < 8; k++)
        p[k] = (uint8_t)(v >> (8 * k));
}

static inline uint64_t
ld64(const uint8_t *p)
{
    uint64_t v = 0;
    if (LITTLE_ENDIAN_HOST) {
        memcpy(&v, p, 8);
        return v;
    }
    for (int k = 0; k < 8; k++)
        v |= (uint64_t)p[k] << (8 * k);
    return v;
}

/* an unsigned little-endian integer of ``width`` (1, 2, 4 or 8) bytes */
static inline uint64_t
ld(const uint8_t *p, int width)
{
    if (LITTLE_ENDIAN_HOST) {
        switch (width) {
        case 1:
            return p[0];
        case 2: {
            uint16_t v;
            memcpy(&v, p, 2);
            return v;
        }
        case 4: {
            uint32_t v;
            memcpy(&v, p, 4);
            return v;
        }
        default:
            return ld64(p);
        }
    }
    uint64_t v = 0;
    for (int k = 0; k < width; k++)
        v |= (uint64_t)p[k] << (8 * k);
    return v;
}

static uint64_t
double_bits(double d)
{
    uint64_t v;
    memcpy(&v, &d, 8);
    return v;
}

static double
bits_double(uint64_t v)
{
    double d;
    memcpy(&d, &v, 8);
    return d;
}

static int
valid_width(int w)
{
    return w == 1 || w == 2 || w == 4 || w == 8;
}

static PyObject *
decode(PyObject *self, PyObject *args)
{
    Py_buffer planes, out;
    Py_ssize_t n;
    int fw, sw, derived;
    if (!PyArg_ParseTuple(args, "y*w*niip", &planes, &out, &n, &fw, &sw, &derived))
        return NULL;
    PyObject *result = NULL;
    int64_t *stack = NULL;
    const uint8_t *src = planes.buf;
    uint8_t *dst = out.buf;

    if (!valid_width(fw) || !valid_width(sw)) {
        PyErr_Format(PyExc_ValueError, "field widths %d and %d (must be 1, 2, 4 or 8)", fw, sw);
        goto done;
    }
    if (n < 1 || n > PY_SSIZE_T_MAX / NODE_SIZE || out.len != n * NODE_SIZE) {
        PyErr_Format(PyExc_ValueError, "%zd nodes do not fill %zd bytes", n, out.len);
        goto done;
    }
    /* every plane below is at most 8 bytes a node, and 8 planes: no sum overflows */
    Py_ssize_t bits_len = (n + 7) / 8;
    if (planes.len < bits_len) {
        PyErr_Format(PyExc_ValueError, "%zd bytes cannot hold the leaf bits of %zd nodes",
                     planes.len, n);
        goto done;
    }
    Py_ssize_t leaves = 0;
    for (Py_ssize_t i = 0; i < bits_len; i++)
        leaves += __builtin_popcount(src[i]);
    if (n % 8 && (src[bits_len - 1] & (0xFF >> (n % 8)))) {
        PyErr_SetString(PyExc_ValueError, "leaf bits are set past the last node");
        goto done;
    }
    Py_ssize_t splits = n - leaves;
    Py_ssize_t expected = bits_len + splits * fw + splits * 8 + n * 8 + leaves * sw +
                          (derived ? leaves : n) * 8 + n + n * 7;
    if (planes.len != expected) {
        PyErr_Format(PyExc_ValueError,
                     "%zd bytes of planes where %zd nodes (%zd leaves) take %zd", planes.len, n,
                     leaves, expected);
        goto done;
    }
    const uint8_t *bits = src;
    const uint8_t *feature = bits + bits_len;
    const uint8_t *threshold = feature + splits * fw;
    const uint8_t *impurity = threshold + splits * 8;
    const uint8_t *samples = impurity + n * 8;
    const uint8_t *weights = samples + leaves * sw;
    const uint8_t *missing = weights + (derived ? leaves : n) * 8;
    const uint8_t *padding = missing + n;

    /* Split nodes awaiting their right child: index * 2, + 1 once their left subtree is done;
     * then the split nodes in order, for the pass over them in reverse. The walk has no
     * branch on a node's kind (leaves and splits alternate unpredictably): it reads the next
     * value of every plane and keeps what the kind says, so a read may go one value past the
     * end of a plane, always into the plane after it (the last two take 8 bytes a node). */
    stack = PyMem_Malloc((size_t)(2 * splits + 3) * sizeof(int64_t));
    if (stack == NULL) {
        PyErr_NoMemory();
        goto done;
    }
    int64_t *awaiting = stack + 1; /* awaiting[-1]: marked by a leaf with no split above */
    int64_t *split_nodes = stack + splits + 2; /* (one spare slot after them too) */
    Py_ssize_t sp = 0, n_splits = 0;
    uint64_t too_many = 0, unused_right;
    for (Py_ssize_t i = 0; i < n; i++) {
        uint8_t *rec = dst + i * NODE_SIZE;
        if (i > 0) {
            if (sp == 0) {
                PyErr_Format(PyExc_ValueError, "the tree ends at node %zd of %zd", i - 1, n);
                goto done;
            }
            /* the split on top had its left subtree done: node i is its right child */
            int64_t top = awaiting[sp - 1];
            int is_right = (int)(top & 1);
            uint8_t *right = is_right ? dst + (top >> 1) * NODE_SIZE + 8 : (uint8_t *)&unused_right;
            st64(right, (uint64_t)i);
            sp -= is_right;
        }
        int leaf = (bits[i >> 3] >> (7 - (i & 7))) & 1;
        int split = leaf ^ 1;
        uint64_t count = ld(samples, sw), f = ld(feature, fw), t = ld64(threshold);
        count = leaf ? count : 0; /* (a split's: its children's, below) */
        too_many |= count;
        st64(rec, leaf ? (uint64_t)(int64_t)TREE_LEAF : (uint64_t)(i + 1));
        st64(rec + 8, (uint64_t)(int64_t)TREE_LEAF); /* (a split's: when its right child comes) */
        st64(rec + 16, leaf ? (uint64_t)(int64_t)TREE_UNDEFINED : f);
        st64(rec + 24, leaf ? double_bits((double)TREE_UNDEFINED) : t);
        memcpy(rec + 32, impurity + i * 8, 8);
        st64(rec + 40, count);
        if (derived) {
            uint64_t w = ld64(weights);
            st64(rec + 48, leaf ? w : 0);
            weights += leaf * 8;
        }
        else
            memcpy(rec + 48, weights + i * 8, 8);
        rec[56] = missing[i];
        memcpy(rec + 57, padding + i * 7, 7);
        feature += split * fw;
        threshold += split * 8;
        samples += leaf * sw;
        /* a split waits for its right child; a leaf ends a subtree, and with it the left
         * subtree of the nearest split above still in its left subtree (any split in its
         * right one was taken off when its right child came) */
        awaiting[sp] = (int64_t)i * 2;
        sp += split;
        awaiting[sp - 1] |= leaf;
        split_nodes[n_splits] = i;
        n_splits += split;
    }
    if (too_many > INT64_MAX) {
        PyErr_SetString(PyExc_ValueError, "a leaf counts 2**63 samples or more");
        goto done;
    }
    if (sp != 0) {
        PyErr_Format(PyExc_ValueError, "%zd split nodes of %zd have no right child", sp, n);
        goto done;
    }
    /* counts (and weights) of split nodes: their children's, which come later in preorder */
    for (Py_ssize_t k = n_splits - 1; k >= 0; k--) {
        Py_ssize_t i = split_nodes[k];
        uint8_t *rec = dst + i * NODE_SIZE;
        const uint8_t *left = dst + (i + 1) * NODE_SIZE;
        const uint8_t *right = dst + ld64(rec + 8) * NODE_SIZE;
        uint64_t count = ld64(left + 40) + ld64(right + 40); /* each <= INT64_MAX */
        if (count > INT64_MAX) {
            PyErr_Format(PyExc_ValueError, "node %zd counts more than 2**63 samples", i);
            goto done;
        }
        st64(rec + 40, count);
        if (derived)
            st64(rec + 48, double_bits(bits_double(ld64(left + 48)) +
                                       bits_double(ld64(right + 48))));
    }
    Py_INCREF(Py_None);
    result = Py_None;
done:
    PyMem_Free(stack);
    PyBuffer_Release(&planes);
    PyBuffer_Release(&out);
    return result;
}

static PyMethodDef methods[] = {
    {"decode", decode, METH_VARARGS,
     "decode(planes, out, n_nodes, feature_width, samples_width, weights_derived, /)\n--\n\n"
     "Rebuild ``n_nodes`` tree nodes (64 bytes each) into ``out`` from their planes; "
     "ValueError when the planes do not describe one whole tree."},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module = {
    PyModuleDef_HEAD_INIT, "_nodes", "Decoding of tree node arrays stored as planes.", -1,
    methods,
};

PyMODINIT_FUNC
PyInit__nodes(void)
{
    return PyModule_Create(&module);
}
