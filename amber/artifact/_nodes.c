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

#include <dlfcn.h>
#include <errno.h>
#include <pthread.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/uio.h>

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

#define ERR_SIZE 200
#define FAIL(...) snprintf(err, ERR_SIZE, __VA_ARGS__)

static int
valid_width(int w)
{
    return w == 1 || w == 2 || w == 4 || w == 8;
}

/* Rebuild ``n`` nodes into ``dst`` (``out_len`` bytes) from ``len`` bytes of planes at ``src``.
 * No Python API: runs without the GIL. Returns 0, or -1 with a message in ``err``. */
static int
rebuild(const uint8_t *src, Py_ssize_t len, uint8_t *dst, Py_ssize_t out_len, Py_ssize_t n,
        int fw, int sw, int derived, char *err)
{
    int result = -1;
    int64_t *stack = NULL;

    if (!valid_width(fw) || !valid_width(sw)) {
        FAIL("field widths %d and %d (must be 1, 2, 4 or 8)", fw, sw);
        goto done;
    }
    if (n < 1 || n > PY_SSIZE_T_MAX / NODE_SIZE || out_len != n * NODE_SIZE) {
        FAIL("%zd nodes do not fill %zd bytes", n, out_len);
        goto done;
    }
    /* every plane below is at most 8 bytes a node, and 8 planes: no sum overflows */
    Py_ssize_t bits_len = (n + 7) / 8;
    if (len < bits_len) {
        FAIL("%zd bytes cannot hold the leaf bits of %zd nodes",
                     len, n);
        goto done;
    }
    Py_ssize_t leaves = 0;
    for (Py_ssize_t i = 0; i < bits_len; i++)
        leaves += __builtin_popcount(src[i]);
    if (n % 8 && (src[bits_len - 1] & (0xFF >> (n % 8)))) {
        FAIL("leaf bits are set past the last node");
        goto done;
    }
    Py_ssize_t splits = n - leaves;
    Py_ssize_t expected = bits_len + splits * fw + splits * 8 + n * 8 + leaves * sw +
                          (derived ? leaves : n) * 8 + n + n * 7;
    if (len != expected) {
        FAIL(
                     "%zd bytes of planes where %zd nodes (%zd leaves) take %zd", len, n,
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
    stack = malloc((size_t)(2 * splits + 3) * sizeof(int64_t));
    if (stack == NULL) {
        FAIL("no memory for the walk over %zd nodes", n);
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
                FAIL("the tree ends at node %zd of %zd", i - 1, n);
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
        FAIL("a leaf counts 2**63 samples or more");
        goto done;
    }
    if (sp != 0) {
        FAIL("%zd split nodes of %zd have no right child", sp, n);
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
            FAIL("node %zd counts more than 2**63 samples", i);
            goto done;
        }
        st64(rec + 40, count);
        if (derived)
            st64(rec + 48, double_bits(bits_double(ld64(left + 48)) +
                                       bits_double(ld64(right + 48))));
    }
    result = 0;
done:
    free(stack);
    return result;
}


/* -- LZ4 blocks ---------------------------------------------------------------------------- */

/* Decode one LZ4 block (the block format: no frame, no size prefix) of ``n`` bytes into
 * exactly ``cap`` bytes at ``dst``. Every length and offset is checked against what is left of
 * the input and the output before it is used; -1 with a message in ``err`` when the block is
 * malformed or does not fill ``cap`` bytes exactly. Copies with 16 bytes of room after them (in
 * the input and the output) move 8 or 16 bytes at a time and may write past their end: what
 * follows in the output is written later, by the same walk (a block must fill the output
 * exactly). No Python API: runs without the GIL. */
static int
lz4_block(const uint8_t *ip, size_t n, uint8_t *dst, size_t cap, char *err)
{
    const uint8_t *const iend = ip + n;
    uint8_t *op = dst;
    uint8_t *const oend = dst + cap;
    if (n == 0) {
        FAIL("an empty LZ4 block");
        return -1;
    }
    for (;;) {
        unsigned token = *ip++;
        size_t lit = token >> 4, off, ml;
        if (lit != 15 && iend - ip >= 32 && oend - op >= 48) {
            /* the common short sequence, far from both ends: 16 bytes of literals (at most 14
             * of them used), and a match of at most 18 bytes from 8 or more bytes back, moved
             * without a loop */
            memcpy(op, ip, 16);
            op += lit;
            ip += lit;
            off = (size_t)ip[0] | ((size_t)ip[1] << 8);
            ip += 2;
            ml = token & 15;
            if (ml != 15 && off >= 8 && off <= (size_t)(op - dst)) {
                const uint8_t *m = op - off;
                memcpy(op, m, 8);
                memcpy(op + 8, m + 8, 8);
                memcpy(op + 16, m + 16, 2);
                op += ml + 4;
                continue;
            }
            goto match;
        }
        if (lit == 15) {
            unsigned b;
            do {
                if (ip >= iend)
                    goto truncated;
                b = *ip++;
                lit += b;
                if (lit > (size_t)(iend - ip))
                    goto truncated;
            } while (b == 255);
        }
        if (lit > (size_t)(iend - ip))
            goto truncated;
        if (lit > (size_t)(oend - op))
            goto overrun;
        if ((size_t)(iend - ip) >= lit + 16 && (size_t)(oend - op) >= lit + 16) {
            for (size_t k = 0; k < lit; k += 16)
                memcpy(op + k, ip + k, 16);
        }
        else
            memcpy(op, ip, lit);
        op += lit;
        ip += lit;
        if (ip == iend)
            break; /* the last sequence: literals only */
        if (iend - ip < 2)
            goto truncated;
        off = (size_t)ip[0] | ((size_t)ip[1] << 8);
        ip += 2;
        ml = token & 15;
    match:
        if (off == 0 || off > (size_t)(op - dst)) {
            FAIL("an LZ4 match at output byte %zu refers %zu bytes back", (size_t)(op - dst), off);
            return -1;
        }
        if (ml == 15) {
            unsigned b;
            do {
                if (ip >= iend)
                    goto truncated;
                b = *ip++;
                ml += b;
                if (ml > cap)
                    goto overrun;
            } while (b == 255);
        }
        ml += 4;
        if (ml > (size_t)(oend - op))
            goto overrun;
        const uint8_t *m = op - off;
        if ((size_t)(oend - op) >= ml + 16) {
            if (off >= 16) { /* each 16 bytes read come before the ones written */
                for (size_t k = 0; k < ml; k += 16)
                    memcpy(op + k, m + k, 16);
            }
            else if (off >= 8) {
                for (size_t k = 0; k < ml; k += 8)
                    memcpy(op + k, m + k, 8);
            }
            else {
                /* a repeating pattern: its first 8 bytes one at a time, then 8 at a time from a
                 * whole number of periods back (8 to 14 bytes, all at or after m) */
                for (size_t k = 0; k < 8; k++)
                    op[k] = m[k];
                size_t back = off * ((8 + off - 1) / off);
                for (size_t k = 8; k < ml; k += 8)
                    memcpy(op + k, op + k - back, 8);
            }
        }
        else if (off >= ml)
            memcpy(op, m, ml);
        else {
            /* near the end of the output, overlapping: as above, but never past ml */
            size_t k = 0, back = off;
            if (off < 8) {
                for (; k < 8 && k < ml; k++)
                    op[k] = m[k];
                back = off * ((8 + off - 1) / off);
            }
            for (; k + 8 <= ml; k += 8)
                memcpy(op + k, op + k - back, 8);
            for (; k < ml; k++)
                op[k] = op[k - back];
        }
        op += ml;
    }
    if (op != oend) {
        FAIL("the LZ4 block decodes to %zu bytes, not %zu", (size_t)(op - dst), cap);
        return -1;
    }
    return 0;
truncated:
    FAIL("the LZ4 block is truncated or malformed (at input byte %zu of %zu)",
         (size_t)(n - (size_t)(iend - ip)), n);
    return -1;
overrun:
    FAIL("the LZ4 block decodes to more than %zu bytes", cap);
    return -1;
}

/* A nodes-lz4 entry's planes (``planes_len`` bytes once decoded from ``block``) rebuilt into
 * ``dst``. No Python API. */
static int
planes_block(const uint8_t *block, size_t n_block, size_t planes_len, uint8_t *dst,
             Py_ssize_t out_len, Py_ssize_t n, int fw, int sw, int derived, char *err)
{
    if (planes_len > (size_t)out_len) { /* (the planes are smaller than the nodes) */
        FAIL("cannot decode to %zu bytes of planes, more than the nodes' %zd", planes_len,
             out_len);
        return -1;
    }
    uint8_t *planes = malloc(planes_len ? planes_len : 1);
    if (planes == NULL) {
        FAIL("no memory for %zu bytes of planes", planes_len);
        return -1;
    }
    int rc = lz4_block(block, n_block, planes, planes_len, err);
    if (rc == 0)
        rc = rebuild(planes, (Py_ssize_t)planes_len, dst, out_len, n, fw, sw, derived, err);
    free(planes);
    return rc;
}

/* Work of at least this many bytes is done with the GIL released */
#define RELEASE_FROM (64 << 10)

static PyObject *
decode(PyObject *self, PyObject *args)
{
    Py_buffer planes, out;
    Py_ssize_t n;
    int fw, sw, derived, rc;
    char err[ERR_SIZE] = "";
    if (!PyArg_ParseTuple(args, "y*w*niip", &planes, &out, &n, &fw, &sw, &derived))
        return NULL;
    if (out.len >= RELEASE_FROM) {
        Py_BEGIN_ALLOW_THREADS
        rc = rebuild(planes.buf, planes.len, out.buf, out.len, n, fw, sw, derived, err);
        Py_END_ALLOW_THREADS
    }
    else
        rc = rebuild(planes.buf, planes.len, out.buf, out.len, n, fw, sw, derived, err);
    PyBuffer_Release(&planes);
    PyBuffer_Release(&out);
    if (rc) {
        PyErr_SetString(PyExc_ValueError, err);
        return NULL;
    }
    Py_RETURN_NONE;
}

static PyObject *
decode_lz4(PyObject *self, PyObject *args)
{
    Py_buffer block, out;
    Py_ssize_t offset, planes_len, n;
    int fw, sw, derived, rc;
    char err[ERR_SIZE] = "";
    if (!PyArg_ParseTuple(args, "y*w*nnniip", &block, &out, &offset, &planes_len, &n, &fw, &sw,
                          &derived))
        return NULL;
    const uint8_t *start = (const uint8_t *)block.buf + offset;
    size_t len = (size_t)(block.len - offset);
    if (planes_len < 0 || offset < 0 || offset > block.len) {
        snprintf(err, ERR_SIZE, "planes of %zd bytes from byte %zd", planes_len, offset);
        rc = -1;
    }
    else if (out.len >= RELEASE_FROM) {
        Py_BEGIN_ALLOW_THREADS
        rc = planes_block(start, len, planes_len, out.buf, out.len, n, fw, sw, derived, err);
        Py_END_ALLOW_THREADS
    }
    else
        rc = planes_block(start, len, planes_len, out.buf, out.len, n, fw, sw, derived, err);
    PyBuffer_Release(&block);
    PyBuffer_Release(&out);
    if (rc) {
        PyErr_SetString(PyExc_ValueError, err);
        return NULL;
    }
    Py_RETURN_NONE;
}

static PyObject *
lz4_decode(PyObject *self, PyObject *args)
{
    Py_buffer block, out;
    int rc;
    char err[ERR_SIZE] = "";
    if (!PyArg_ParseTuple(args, "y*w*", &block, &out))
        return NULL;
    if (out.len >= RELEASE_FROM) {
        Py_BEGIN_ALLOW_THREADS
        rc = lz4_block(block.buf, block.len, out.buf, out.len, err);
        Py_END_ALLOW_THREADS
    }
    else
        rc = lz4_block(block.buf, block.len, out.buf, out.len, err);
    PyBuffer_Release(&block);
    PyBuffer_Release(&out);
    if (rc) {
        PyErr_SetString(PyExc_ValueError, err);
        return NULL;
    }
    Py_RETURN_NONE;
}

/* -- Batch: entries read and decoded on another thread --------------------------------------
 *
 * A load hands the buffer entries of a model to a Batch, starts a thread that calls its run()
 * (which releases the GIL once, for all of them), and takes each entry with wait(i) when the
 * unpickler reaches it: reading and decoding run on the other core while this one builds the
 * objects. A job reads an entry (its local header and data, with one preadv), or decodes an
 * LZ4 block or a nodes-lz4 entry read before; it may hash what it read, or the block before
 * decoding it (XXH3-128), for the caller to compare with the manifest when it takes the entry:
 * nothing is handed out unchecked, and the decoders are safe on any input. The thread stays
 * at most ``window`` bytes of finished jobs ahead of the ones taken (memory: a forest's trees
 * copy their node arrays, so what is read ahead is held twice until taken). wait(i) counts
 * every job up to i as taken, so the thread never waits for a job the caller has passed. The
 * Batch holds each job's buffers until the job is taken; run() keeps it alive while it runs.
 */
enum { JOB_LZ4 = 0, JOB_NODES = 1, JOB_READ = 2 };

typedef struct {
    int kind, fw, sw, derived, fd;
    int hash; /* HASH_*: which bytes the thread hashes (XXH3-128), if any */
    Py_ssize_t planes_len, n, offset; /* (a nodes-lz4 job's offset: its block's in src) */
    Py_buffer src, dst; /* (a read's src: where its local header goes) */
    int ok, released, digested;
    char err[ERR_SIZE];
    char digest[33];
} Job;

enum { HASH_NONE = 0, HASH_SRC = 1, HASH_DST = 2 };

/* XXH3-128 as the xxhash package's own extension exports it (use_xxh3), so that the thread
 * checks what it reads; without it the caller hashes each entry when it takes it. */
typedef struct {
    uint64_t low64, high64;
} xxh128;
static xxh128 (*xxh3_128)(const void *, size_t) = NULL;

static void
hex_digest(const void *data, size_t len, char *out)
{
    xxh128 h = xxh3_128(data, len);
    snprintf(out, 33, "%016llx%016llx", (unsigned long long)h.high64,
             (unsigned long long)h.low64);
}

typedef struct {
    PyObject_HEAD
    Job *jobs;
    Py_ssize_t n_jobs, held; /* jobs, and jobs whose buffers are held */
    Py_ssize_t done;         /* jobs finished, in order */
    Py_ssize_t taken;        /* jobs the caller has passed (wait) */
    Py_ssize_t ahead, window; /* bytes of jobs finished and not taken; the most there may be */
    int started, finished, stop;
    pthread_mutex_t mu;
    pthread_cond_t cv;
} Batch;

/* One preadv of the whole ``len(header) + len(data)`` bytes at ``offset``, retried where a
 * signal cut it short. */
static int
read_job(Job *j)
{
    char *err = j->err;
    struct iovec iov[2] = {{j->src.buf, (size_t)j->src.len}, {j->dst.buf, (size_t)j->dst.len}};
    size_t want = (size_t)j->src.len + (size_t)j->dst.len, got = 0;
    while (got < want) {
        struct iovec part[2];
        int k = 0;
        size_t skip = got;
        for (int q = 0; q < 2; q++) {
            if (skip >= iov[q].iov_len) {
                skip -= iov[q].iov_len;
                continue;
            }
            part[k].iov_base = (char *)iov[q].iov_base + skip;
            part[k].iov_len = iov[q].iov_len - skip;
            skip = 0;
            k++;
        }
        ssize_t r = preadv(j->fd, part, k, (off_t)(j->offset + (Py_ssize_t)got));
        if (r < 0 && errno == EINTR)
            continue;
        if (r < 0) {
            FAIL("the read failed (errno %d)", errno); /* (strerror is not thread-safe) */
            return -1;
        }
        if (r == 0) {
            FAIL("the file ends %zu bytes into the entry", got);
            return -1;
        }
        got += (size_t)r;
    }
    return 0;
}

static int
run_job(Job *j)
{
    if (j->hash == HASH_SRC) { /* (before it is decoded: a damaged block says so) */
        hex_digest(j->src.buf, (size_t)j->src.len, j->digest);
        j->digested = 1;
    }
    if (j->kind == JOB_READ) {
        int rc = read_job(j);
        if (rc == 0 && j->hash == HASH_DST) {
            hex_digest(j->dst.buf, (size_t)j->dst.len, j->digest);
            j->digested = 1;
        }
        return rc;
    }
    if (j->kind == JOB_LZ4)
        return lz4_block(j->src.buf, (size_t)j->src.len, j->dst.buf, (size_t)j->dst.len, j->err);
    return planes_block((const uint8_t *)j->src.buf + j->offset, (size_t)(j->src.len - j->offset),
                        (size_t)j->planes_len, j->dst.buf, j->dst.len, j->n, j->fw, j->sw,
                        j->derived, j->err);
}

static void
release_job(Job *j)
{
    if (!j->released) {
        j->released = 1;
        PyBuffer_Release(&j->src);
        PyBuffer_Release(&j->dst);
    }
}

static void
batch_dealloc(Batch *b)
{
    for (Py_ssize_t i = 0; i < b->held; i++)
        release_job(&b->jobs[i]);
    PyMem_Free(b->jobs);
    pthread_mutex_destroy(&b->mu);
    pthread_cond_destroy(&b->cv);
    Py_TYPE(b)->tp_free((PyObject *)b);
}

static PyObject *
batch_new(PyTypeObject *type, PyObject *args, PyObject *kwds)
{
    PyObject *list;
    Py_ssize_t window;
    if (!PyArg_ParseTuple(args, "O!n", &PyList_Type, &list, &window))
        return NULL;
    Batch *b = (Batch *)type->tp_alloc(type, 0);
    if (b == NULL)
        return NULL;
    pthread_mutex_init(&b->mu, NULL);
    pthread_cond_init(&b->cv, NULL);
    b->window = window;
    Py_ssize_t n = PyList_GET_SIZE(list);
    b->jobs = PyMem_Calloc(n ? (size_t)n : 1, sizeof(Job));
    if (b->jobs == NULL) {
        Py_DECREF(b);
        return PyErr_NoMemory();
    }
    b->n_jobs = n;
    for (Py_ssize_t i = 0; i < n; i++) {
        Job *j = &b->jobs[i];
        PyObject *item = PyList_GET_ITEM(list, i);
        Py_ssize_t size = PyTuple_Check(item) ? PyTuple_GET_SIZE(item) : -1;
        int ok;
        if (size == 4)
            ok = PyArg_ParseTuple(item, "iy*w*i", &j->kind, &j->src, &j->dst, &j->hash);
        else if (size == 6)
            ok = PyArg_ParseTuple(item, "iinw*w*i", &j->kind, &j->fd, &j->offset, &j->src,
                                  &j->dst, &j->hash);
        else if (size == 10)
            ok = PyArg_ParseTuple(item, "iy*w*nnniipi", &j->kind, &j->src, &j->dst, &j->offset,
                                  &j->planes_len, &j->n, &j->fw, &j->sw, &j->derived, &j->hash);
        else {
            PyErr_Format(PyExc_TypeError, "job %zd is not a tuple of 4, 6 or 10 items", i);
            ok = 0;
        }
        if (!ok) {
            Py_DECREF(b);
            return NULL;
        }
        b->held = i + 1;
        int kind_ok = size == 4   ? j->kind == JOB_LZ4
                      : size == 6 ? j->kind == JOB_READ && j->fd >= 0 && j->offset >= 0
                                  : j->kind == JOB_NODES && j->planes_len >= 0 &&
                                        j->offset >= 0 && j->offset <= j->src.len;
        int hash_ok = j->hash == HASH_NONE ||
                      (xxh3_128 != NULL && j->hash == (j->kind == JOB_READ ? HASH_DST : HASH_SRC));
        if (!kind_ok || !hash_ok) {
            PyErr_Format(PyExc_ValueError, "job %zd: kind %d with %zd items, hash %d", i, j->kind,
                         size, j->hash);
            Py_DECREF(b);
            return NULL;
        }
    }
    return (PyObject *)b;
}

static PyObject *
batch_run(Batch *b, PyObject *unused)
{
    pthread_mutex_lock(&b->mu);
    int again = b->started;
    b->started = 1;
    pthread_mutex_unlock(&b->mu);
    if (again) {
        PyErr_SetString(PyExc_RuntimeError, "the batch has already run");
        return NULL;
    }
    Py_BEGIN_ALLOW_THREADS
    for (Py_ssize_t i = 0; i < b->n_jobs; i++) {
        pthread_mutex_lock(&b->mu);
        while (!b->stop && b->ahead > b->window && b->taken < i)
            pthread_cond_wait(&b->cv, &b->mu);
        int stop = b->stop;
        pthread_mutex_unlock(&b->mu);
        if (stop)
            break;
        Job *j = &b->jobs[i];
        j->ok = run_job(j) == 0;
        pthread_mutex_lock(&b->mu);
        b->done = i + 1;
        if (b->taken <= i)
            b->ahead += j->dst.len;
        pthread_cond_broadcast(&b->cv);
        pthread_mutex_unlock(&b->mu);
    }
    pthread_mutex_lock(&b->mu);
    b->finished = 1;
    pthread_cond_broadcast(&b->cv);
    pthread_mutex_unlock(&b->mu);
    Py_END_ALLOW_THREADS
    Py_RETURN_NONE;
}

static PyObject *
batch_wait(Batch *b, PyObject *arg)
{
    Py_ssize_t i = PyLong_AsSsize_t(arg);
    if (i == -1 && PyErr_Occurred())
        return NULL;
    if (i < 0 || i >= b->n_jobs) {
        PyErr_Format(PyExc_IndexError, "job %zd of %zd", i, b->n_jobs);
        return NULL;
    }
    Py_ssize_t done, from;
    pthread_mutex_lock(&b->mu);
    /* every job up to i is taken: the thread may go on past them */
    from = b->taken;
    for (Py_ssize_t k = from; k <= i && k < b->done; k++)
        b->ahead -= b->jobs[k].dst.len;
    if (b->taken <= i)
        b->taken = i + 1;
    pthread_cond_broadcast(&b->cv);
    done = b->done;
    int finished = b->finished;
    pthread_mutex_unlock(&b->mu);
    if (done <= i && !finished) {
        Py_BEGIN_ALLOW_THREADS
        pthread_mutex_lock(&b->mu);
        while (b->done <= i && !b->finished)
            pthread_cond_wait(&b->cv, &b->mu);
        done = b->done;
        pthread_mutex_unlock(&b->mu);
        Py_END_ALLOW_THREADS
    }
    /* the thread is done with (or never reached) jobs up to i: their buffers are let go, so
     * that the caller's view of an output is its only export, which it may release */
    for (Py_ssize_t k = from; k <= i && k < done; k++)
        release_job(&b->jobs[k]);
    if (done <= i) {
        PyErr_SetString(PyExc_RuntimeError, "the batch stopped before this job");
        return NULL;
    }
    if (!b->jobs[i].ok) {
        PyErr_SetString(PyExc_ValueError, b->jobs[i].err);
        return NULL;
    }
    Py_RETURN_NONE;
}

static PyObject *
batch_digest(Batch *b, PyObject *arg)
{
    Py_ssize_t i = PyLong_AsSsize_t(arg);
    if (i == -1 && PyErr_Occurred())
        return NULL;
    if (i < 0 || i >= b->n_jobs || i >= b->taken) {
        PyErr_Format(PyExc_IndexError, "job %zd is not one taken (of %zd)", i, b->n_jobs);
        return NULL;
    }
    Job *j = &b->jobs[i];
    if (i >= b->done || !j->digested)
        Py_RETURN_NONE;
    return PyUnicode_FromString(j->digest);
}

static PyObject *
batch_finished(Batch *b, void *unused)
{
    pthread_mutex_lock(&b->mu);
    int finished = b->finished;
    pthread_mutex_unlock(&b->mu);
    return PyBool_FromLong(finished);
}

static PyGetSetDef batch_getset[] = {
    {"finished", (getter)batch_finished, NULL,
     "Whether run() is past its last job (it may still be returning).", NULL},
    {NULL, NULL, NULL, NULL, NULL},
};

static PyObject *
batch_cancel(Batch *b, PyObject *unused)
{
    pthread_mutex_lock(&b->mu);
    b->stop = 1;
    pthread_cond_broadcast(&b->cv); /* (a thread held back by the window) */
    pthread_mutex_unlock(&b->mu);
    Py_RETURN_NONE;
}

static PyMethodDef batch_methods[] = {
    {"run", (PyCFunction)batch_run, METH_NOARGS,
     "Run every job in order, without the GIL (on a thread of its own); once only."},
    {"wait", (PyCFunction)batch_wait, METH_O,
     "wait(i): block until job i is decoded, then let go of its buffers; ValueError with its "
     "message if it failed, RuntimeError if the batch stopped before it."},
    {"digest", (PyCFunction)batch_digest, METH_O,
     "digest(i): the XXH3-128 (hex) the thread computed for taken job i (of the bytes read, "
     "or of the block before it was decoded, whether it then decoded or not), or None where "
     "it computed none."},
    {"cancel", (PyCFunction)batch_cancel, METH_NOARGS,
     "Stop after the job being decoded (run() then returns)."},
    {NULL, NULL, 0, NULL},
};

static PyTypeObject BatchType = {
    PyVarObject_HEAD_INIT(NULL, 0).tp_name = "amber.artifact._nodes.Batch",
    .tp_basicsize = sizeof(Batch),
    .tp_dealloc = (destructor)batch_dealloc,
    .tp_flags = Py_TPFLAGS_DEFAULT,
    .tp_doc = "Batch(jobs, window): entries to read and decode on another thread, at most "
              "``window`` bytes ahead of those taken. A job is (0, block, out, hash) for an LZ4 "
              "block, (1, stored, out, offset, planes_size, n_nodes, feature_width, samples_width, "
              "weights_derived, hash) for a nodes-lz4 entry's planes, or (2, fd, offset, header, "
              "out, hash) to read an entry's local header and data with one preadv; ``hash`` "
              "(1 for a block, 2 for a read; use_xxh3 first) has the thread hash the block or "
              "the data read (see digest), 0 not.",
    .tp_methods = batch_methods,
    .tp_getset = batch_getset,
    .tp_new = batch_new,
};

static PyObject *
use_xxh3(PyObject *self, PyObject *arg)
{
    const char *path = PyUnicode_AsUTF8(arg);
    if (path == NULL)
        return NULL;
    if (xxh3_128 == NULL) {
        /* the xxhash package's extension, already loaded by its import (never loaded here) */
        void *lib = dlopen(path, RTLD_NOW | RTLD_NOLOAD);
        if (lib != NULL)
            *(void **)&xxh3_128 = dlsym(lib, "XXH3_128bits");
    }
    return PyBool_FromLong(xxh3_128 != NULL);
}

static PyObject *
xxh3_hex(PyObject *self, PyObject *arg)
{
    Py_buffer data;
    char out[33];
    if (xxh3_128 == NULL) {
        PyErr_SetString(PyExc_RuntimeError, "use_xxh3() found no XXH3_128bits");
        return NULL;
    }
    if (PyObject_GetBuffer(arg, &data, PyBUF_SIMPLE) < 0)
        return NULL;
    hex_digest(data.buf, (size_t)data.len, out);
    PyBuffer_Release(&data);
    return PyUnicode_FromString(out);
}

static PyMethodDef methods[] = {
    {"use_xxh3", use_xxh3, METH_O,
     "use_xxh3(path, /)\n--\n\n"
     "Find XXH3_128bits in the loaded extension at ``path`` (xxhash's) for Batch jobs that "
     "hash; whether it is there."},
    {"xxh3_hex", xxh3_hex, METH_O,
     "xxh3_hex(data, /)\n--\n\n"
     "The XXH3-128 of ``data`` as Batch jobs compute it (hex), for tests."},
    {"decode", decode, METH_VARARGS,
     "decode(planes, out, n_nodes, feature_width, samples_width, weights_derived, /)\n--\n\n"
     "Rebuild ``n_nodes`` tree nodes (64 bytes each) into ``out`` from their planes; "
     "ValueError when the planes do not describe one whole tree."},
    {"decode_lz4", decode_lz4, METH_VARARGS,
     "decode_lz4(stored, out, offset, planes_size, n_nodes, feature_width, samples_width, "
     "weights_derived, /)\n--\n\n"
     "decode() of the planes (``planes_size`` bytes) that the LZ4 block from byte ``offset`` "
     "of ``stored`` holds."},
    {"lz4_decode", lz4_decode, METH_VARARGS,
     "lz4_decode(block, out, /)\n--\n\n"
     "Decode the LZ4 block ``block`` into ``out``, which it must fill exactly; ValueError "
     "otherwise."},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module = {
    PyModuleDef_HEAD_INIT, "_nodes", "Decoding of tree node arrays stored as planes.", -1,
    methods,
};

PyMODINIT_FUNC
PyInit__nodes(void)
{
    if (PyType_Ready(&BatchType) < 0)
        return NULL;
    PyObject *m = PyModule_Create(&module);
    if (m == NULL)
        return NULL;
    Py_INCREF(&BatchType);
    if (PyModule_AddObject(m, "Batch", (PyObject *)&BatchType) < 0) {
        Py_DECREF(&BatchType);
        Py_DECREF(m);
        return NULL;
    }
    return m;
}
