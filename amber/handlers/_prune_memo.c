/* Drop the memo stores of a pickle stream that nothing reads back: pickletools.optimize, in C.
 *
 * The pickler memoizes every object it writes, so that a second reference to it can be a GET;
 * most are never referenced again (a vocabulary's 300,000 keys are each written once). Each
 * store still costs the unpickler a memo slot, and a reader's checks one more entry to track.
 * This pass removes the MEMOIZE opcodes whose index no GET reads, renumbers the GETs, and
 * shrinks the frames that held the removed bytes; the stream builds the same objects.
 *
 * It takes the streams the C pickler writes with protocols 4 and 5 (MEMOIZE, BINGET,
 * LONG_BINGET, FRAME). Anything else (protocols 0-3's PUTs, opcodes with text arguments, an
 * opcode it does not know, a stream that is malformed or has bytes after its STOP) makes it
 * return None, and the caller keeps the stream as it was: it is an optimisation, never a check
 * (the reader's scanner vets every stream it loads).
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <stdint.h>
#include <string.h>

#define OP_FRAME 0x95
#define OP_MEMOIZE 0x94
#define OP_BINGET 'h'
#define OP_LONG_BINGET 'j'
#define OP_STOP '.'

static uint64_t
read_le(const unsigned char *p, int n)
{
    uint64_t v = 0;
    for (int i = n - 1; i >= 0; i--)
        v = (v << 8) | p[i];
    return v;
}

static void
write_le(unsigned char *p, uint64_t v, int n)
{
    for (int i = 0; i < n; i++, v >>= 8)
        p[i] = (unsigned char)(v & 0xff);
}

/* The length of the opcode at p (its byte and its argument), or -1: an opcode this pass does
 * not take (text arguments, PUTs with explicit indices, unknown) or one cut off by the end. */
static Py_ssize_t
op_len(const unsigned char *p, Py_ssize_t avail)
{
    uint64_t n;
    switch (p[0]) {
    case '.': case '(': case '0': case '1': case '2': case 'N': case 0x88: case 0x89:
    case ']': case '}': case ')': case 0x8f: case 0x91: case 'a': case 'e': case 's':
    case 'u': case 0x90: case 't': case 0x85: case 0x86: case 0x87: case 'l': case 'd':
    case 0x93: case 'R': case 'b': case 0x81: case 0x92: case 'o': case OP_MEMOIZE:
    case 'Q': case 0x97: case 0x98:
        n = 1; /* no argument */
        break;
    case 0x80: case 'K': case OP_BINGET: case 0x82: /* PROTO, BININT1, BINGET, EXT1 */
        n = 2;
        break;
    case 'M': case 0x83: /* BININT2, EXT2 */
        n = 3;
        break;
    case 'J': case OP_LONG_BINGET: case 0x84: /* BININT, LONG_BINGET, EXT4 */
        n = 5;
        break;
    case 'G': /* BINFLOAT */
        n = 9;
        break;
    case 0x8a: case 0x8c: case 'C': case 'U': /* LONG1, SHORT_BINUNICODE, SHORT_BINBYTES, */
        if (avail < 2)                         /* SHORT_BINSTRING: a 1-byte length */
            return -1;
        n = 2 + (uint64_t)p[1];
        break;
    case 0x8b: case 'X': case 'B': case 'T': /* LONG4, BINUNICODE, BINBYTES, BINSTRING */
        if (avail < 5)
            return -1;
        n = 5 + read_le(p + 1, 4); /* a negative signed length reads as too long: refused */
        break;
    case 0x8d: case 0x8e: case 0x96: /* BINUNICODE8, BINBYTES8, BYTEARRAY8 */
        if (avail < 9)
            return -1;
        n = read_le(p + 1, 8);
        if (n > (uint64_t)avail)
            return -1;
        n += 9;
        break;
    default:
        return -1;
    }
    return n > (uint64_t)avail ? -1 : (Py_ssize_t)n;
}

typedef struct {
    uint8_t *read;       /* read[i]: a GET reads memo index i */
    Py_ssize_t nmemo;    /* MEMOIZE opcodes */
    Py_ssize_t *events;  /* offsets of the FRAME, MEMOIZE and GET opcodes, in order */
    Py_ssize_t nevents;
} Walk;

static int
grow(void **buf, Py_ssize_t *cap, Py_ssize_t need, size_t item)
{
    if (need <= *cap)
        return 0;
    Py_ssize_t ncap = *cap ? 2 * *cap : 1024;
    while (ncap < need)
        ncap *= 2;
    void *grown = PyMem_Realloc(*buf, (size_t)ncap * item);
    if (grown == NULL) {
        PyErr_NoMemory();
        return -1;
    }
    *buf = grown;
    *cap = ncap;
    return 0;
}

/* One pass over the stream: which memo indices a GET reads, where the opcodes this pass may
 * change are. Returns 1, 0 (not a stream this pass takes), or -1 (out of memory). */
static int
walk(const unsigned char *d, Py_ssize_t len, Walk *wk)
{
    Py_ssize_t rcap = 0, ecap = 0, i = 0, frame_end = -1;
    int stopped = 0;
    while (i < len && !stopped) {
        if (i == frame_end)
            frame_end = -1;
        unsigned char op = d[i];
        Py_ssize_t n;
        if (op == OP_FRAME) {
            if (frame_end >= 0 || len - i < 9 || read_le(d + i + 1, 8) > (uint64_t)(len - i - 9))
                return 0; /* a frame inside a frame, or past the end */
            frame_end = i + 9 + (Py_ssize_t)read_le(d + i + 1, 8);
            n = 9;
        }
        else if ((n = op_len(d + i, len - i)) < 0 || (frame_end >= 0 && i + n > frame_end))
            return 0; /* an opcode this pass does not take, or one across a frame's end */
        if (op == OP_MEMOIZE) {
            if (grow((void **)&wk->read, &rcap, wk->nmemo + 1, 1) < 0)
                return -1;
            wk->read[wk->nmemo++] = 0;
        }
        else if (op == OP_BINGET || op == OP_LONG_BINGET) {
            uint64_t idx = op == OP_BINGET ? d[i + 1] : read_le(d + i + 1, 4);
            if (idx >= (uint64_t)wk->nmemo)
                return 0; /* a GET of what is not stored yet */
            wk->read[idx] = 1;
        }
        if (op == OP_FRAME || op == OP_MEMOIZE || op == OP_BINGET || op == OP_LONG_BINGET) {
            if (grow((void **)&wk->events, &ecap, wk->nevents + 1, sizeof(Py_ssize_t)) < 0)
                return -1;
            wk->events[wk->nevents++] = i;
        }
        stopped = op == OP_STOP;
        i += n;
    }
    /* what ends the stream ends its last frame, and nothing follows the STOP */
    return stopped && i == len && (frame_end < 0 || frame_end == len);
}

static PyObject *
prune(PyObject *module, PyObject *arg)
{
    Py_buffer view;
    if (PyObject_GetBuffer(arg, &view, PyBUF_SIMPLE) < 0)
        return NULL;
    const unsigned char *d = view.buf;
    Py_ssize_t len = view.len;
    Walk wk = {NULL, 0, NULL, 0};
    Py_ssize_t *renumbered = NULL;
    PyObject *out = NULL;

    int taken = walk(d, len, &wk);
    if (taken < 0)
        goto error;
    Py_ssize_t kept = 0;
    for (Py_ssize_t k = 0; k < wk.nmemo; k++)
        kept += wk.read[k];
    if (!taken || kept == wk.nmemo)
        goto unchanged; /* not a stream this pass takes, or nothing to drop */
    renumbered = PyMem_Malloc((size_t)wk.nmemo * sizeof(Py_ssize_t));
    out = PyBytes_FromStringAndSize(NULL, len); /* the result is never longer */
    if (renumbered == NULL || out == NULL) {
        if (renumbered == NULL)
            PyErr_NoMemory();
        goto error;
    }
    unsigned char *o = (unsigned char *)PyBytes_AS_STRING(out);
    /* Bytes between the changed opcodes are copied as they are, in runs. */
    Py_ssize_t w = 0, copied = 0, memo = 0, next = 0;
    Py_ssize_t frame_at = -1, frame_end = -1; /* the open frame's header in out, its end in d */
#define COPY_TO(end)                                               \
    do {                                                           \
        memcpy(o + w, d + copied, (size_t)((end) - copied));       \
        w += (end) - copied;                                       \
        copied = (end);                                            \
    } while (0)
#define CLOSE_FRAME()                                              \
    do {                                                           \
        COPY_TO(frame_end);                                        \
        Py_ssize_t size_ = w - frame_at - 9;                       \
        if (size_ == 0)                                            \
            w = frame_at; /* all of it dropped: so is the frame */ \
        else                                                       \
            write_le(o + frame_at + 1, (uint64_t)size_, 8);        \
        frame_at = -1;                                             \
    } while (0)
    for (Py_ssize_t e = 0; e < wk.nevents; e++) {
        Py_ssize_t i = wk.events[e];
        if (frame_at >= 0 && frame_end <= i)
            CLOSE_FRAME();
        unsigned char op = d[i];
        if (op == OP_FRAME) {
            COPY_TO(i);
            frame_at = w;
            frame_end = i + 9 + (Py_ssize_t)read_le(d + i + 1, 8);
            memcpy(o + w, d + i, 9);
            w += 9;
            copied = i + 9;
        }
        else if (op == OP_MEMOIZE) {
            if (wk.read[memo])
                renumbered[memo] = next++; /* kept as it is, in the run */
            else {
                COPY_TO(i);
                copied = i + 1; /* dropped */
            }
            memo++;
        }
        else { /* BINGET, LONG_BINGET */
            uint64_t idx = op == OP_BINGET ? d[i + 1] : read_le(d + i + 1, 4);
            Py_ssize_t now = renumbered[idx]; /* never above idx: never a longer opcode */
            COPY_TO(i);
            if (now < 256) {
                o[w++] = OP_BINGET;
                o[w++] = (unsigned char)now;
            }
            else {
                o[w++] = OP_LONG_BINGET;
                write_le(o + w, (uint64_t)now, 4);
                w += 4;
            }
            copied = i + (op == OP_BINGET ? 2 : 5);
        }
    }
    if (frame_at >= 0)
        CLOSE_FRAME();
    COPY_TO(len);
#undef COPY_TO
#undef CLOSE_FRAME
    PyMem_Free(wk.read);
    PyMem_Free(wk.events);
    PyMem_Free(renumbered);
    PyBuffer_Release(&view);
    if (_PyBytes_Resize(&out, w) < 0)
        return NULL;
    return out;

unchanged:
    PyMem_Free(wk.read);
    PyMem_Free(wk.events);
    PyBuffer_Release(&view);
    Py_RETURN_NONE;
error:
    PyMem_Free(wk.read);
    PyMem_Free(wk.events);
    PyMem_Free(renumbered);
    Py_XDECREF(out);
    PyBuffer_Release(&view);
    return NULL;
}

static PyMethodDef methods[] = {
    {"prune", prune, METH_O,
     "prune(stream)\n--\n\n"
     "The pickle stream without the memo stores that no GET reads (GETs renumbered, frames "
     "shrunk), or None when there are none or the stream is not a protocol 4-5 one this pass "
     "takes."},
    {NULL, NULL, 0, NULL}};

static struct PyModuleDef moduledef = {
    PyModuleDef_HEAD_INIT, "amber.handlers._prune_memo",
    "Drop the memo stores of a pickle stream that nothing reads back.", -1, methods};

PyMODINIT_FUNC
PyInit__prune_memo(void)
{
    return PyModule_Create(&moduledef);
}
