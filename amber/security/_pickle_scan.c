/*
 * amber.security._pickle_scan: vet a pickle opcode stream without executing it.
 *
 * scan(data, n_buffers, max_memo, hooks=frozenset(), max_stack=..., max_marks=...)
 *   -> (globals, declared_protocol, max_opcode_protocol, n_buffers_used, hook_sites, called,
 *       frames)
 *
 * The stream is walked once. Every stack item carries a tag (string literal, global,
 * constructed object, out-of-band buffer, anything else) so that the rules that make a
 * stream safe to hand to the C unpickler can be checked:
 *
 *   - no PERSID/BINPERSID, EXT1/2/4, INST/OBJ or unknown opcodes;
 *   - every length is checked against the bytes that remain before anything is read;
 *   - FRAMEs are consistent (no nesting, no opcode crossing a frame's end);
 *   - memo indices stay below max_memo, GET only reads set entries;
 *   - NEXT_BUFFER at most n_buffers times, READONLY_BUFFER only on a buffer, no memo copy
 *     (GET) or DUP of a buffer;
 *   - REDUCE/NEWOBJ/NEWOBJ_EX call a global, BUILD targets a constructed object (never a
 *     global), APPEND/SETITEM/ADDITEMS never target a global;
 *   - nothing modifies bytes an array may view in place once they are made (a BYTEARRAY8
 *     literal, an out-of-band buffer, the result of a global hooked as DATA: an array made on
 *     such bytes): they are never the target of item assignment or BUILD;
 *   - STACK_GLOBAL operands are string literals (or memo copies of them);
 *   - no stack underflow, no MARK mismatch, bounded stack and MARK depth;
 *   - exactly one STOP, at the very end, leaving exactly one item and no MARK.
 *
 * globals: list of (module, name) str pairs in order of first use, exactly as written in
 * the stream (no fix_imports mapping). called: indices of the globals that REDUCE, NEWOBJ
 * or NEWOBJ_EX call directly. frames: offsets of the FRAME opcodes (whoever inserts bytes
 * into the stream must grow the frames around them: the C unpickler cannot read an opcode
 * that crosses the end of a frame).
 *
 * hook_sites: `hooks` maps (module, name) to 1 (validate the object), 2 (validate its state)
 * or 3 (both); a set means 1. Each site is (start, end, global_index, kind):
 *   kind 0, object: `start` is the offset where the callable's stack slot was first pushed,
 *     `end` the offset just after the object's BUILD (or after its REDUCE/NEWOBJ when it is
 *     never built). Such objects must be built at most once, and only through the stack
 *     slot that made them.
 *   kind 1, state: `start` is where the slot of a BUILD's state was first pushed, `end` the
 *     offset of that BUILD opcode.
 * Inserting a push of a validator at `start` and TUPLE1 REDUCE at `end` makes the unpickler
 * pass the object (or the state) through the validator before anything else can use it.
 *
 * Errors raise ScanError(message, offset).
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <stdint.h>
#include <string.h>

/* ------------------------------------------------------------------ opcodes */
enum {
    OP_MARK = '(', OP_STOP = '.', OP_POP = '0', OP_POP_MARK = '1', OP_DUP = '2',
    OP_FLOAT = 'F', OP_INT = 'I', OP_BININT = 'J', OP_BININT1 = 'K', OP_LONG = 'L',
    OP_BININT2 = 'M', OP_NONE = 'N', OP_PERSID = 'P', OP_BINPERSID = 'Q', OP_REDUCE = 'R',
    OP_STRING = 'S', OP_BINSTRING = 'T', OP_SHORT_BINSTRING = 'U', OP_UNICODE = 'V',
    OP_BINUNICODE = 'X', OP_APPEND = 'a', OP_BUILD = 'b', OP_GLOBAL = 'c', OP_DICT = 'd',
    OP_EMPTY_DICT = '}', OP_APPENDS = 'e', OP_GET = 'g', OP_BINGET = 'h', OP_INST = 'i',
    OP_LONG_BINGET = 'j', OP_LIST = 'l', OP_EMPTY_LIST = ']', OP_OBJ = 'o', OP_PUT = 'p',
    OP_BINPUT = 'q', OP_LONG_BINPUT = 'r', OP_SETITEM = 's', OP_TUPLE = 't',
    OP_EMPTY_TUPLE = ')', OP_SETITEMS = 'u', OP_BINFLOAT = 'G',
    OP_PROTO = 0x80, OP_NEWOBJ = 0x81, OP_EXT1 = 0x82, OP_EXT2 = 0x83, OP_EXT4 = 0x84,
    OP_TUPLE1 = 0x85, OP_TUPLE2 = 0x86, OP_TUPLE3 = 0x87, OP_NEWTRUE = 0x88,
    OP_NEWFALSE = 0x89, OP_LONG1 = 0x8a, OP_LONG4 = 0x8b,
    OP_BINBYTES = 'B', OP_SHORT_BINBYTES = 'C',
    OP_SHORT_BINUNICODE = 0x8c, OP_BINUNICODE8 = 0x8d, OP_BINBYTES8 = 0x8e,
    OP_EMPTY_SET = 0x8f, OP_ADDITEMS = 0x90, OP_FROZENSET = 0x91, OP_NEWOBJ_EX = 0x92,
    OP_STACK_GLOBAL = 0x93, OP_MEMOIZE = 0x94, OP_FRAME = 0x95,
    OP_BYTEARRAY8 = 0x96, OP_NEXT_BUFFER = 0x97, OP_READONLY_BUFFER = 0x98
};

/* ------------------------------------------------------------------ items */
enum { T_ANY = 0, T_STR = 1, T_GLOBAL = 2, T_OBJ = 3, T_BUFFER = 4 };
/* item flags. F_BIG: an out-of-band buffer or a literal of at least BIG_BYTES (whose consumer
 * may copy it: a decision tree copies its node array). F_CONT: a container or an object.
 * F_READ (memo entries): some GET reads this index. A memo store of an F_BIG or F_CONT item
 * that no GET reads is one the loader can neutralise (see splice_hooks); a store of a small
 * scalar or a string is left alone: something else holds it anyway. */
/* F_DATA: bytes an array may view in place (a bytearray literal, an out-of-band buffer) or
 * an array made on such bytes (by a G_DATA global: numpy's _frombuffer). Validators check such
 * arrays where they lie, so nothing may change them once made: no item assignment, no BUILD
 * (a bytearray's bytes rewritten under a boosting tree that was checked with the first ones
 * would send its predict far outside its nodes). Honest pickles never modify them. */
enum { F_COPY = 1, F_SET = 2, F_BIG = 4, F_READ = 8, F_CONT = 16, F_DATA = 32 };
#define BIG_BYTES (64 * 1024)
enum { K_UTF8 = 0, K_ASCII = 1, K_RAWUNI = 2 };  /* how a T_STR literal decodes */
/* per-global flags; G_CALL_ONLY: the loader hands out an argument-checking stand-in for it,
 * so the stream may call it but not hold it as a value */
enum { G_HOOKED = 1, G_STATE_HOOKED = 2, G_CALLED = 4, G_REDUCED = 8, G_CALL_ONLY = 16,
       G_DATA = 32 };
enum { SITE_OBJECT = 0, SITE_STATE = 1 };                  /* kinds of hook sites */
#define NO_HOOK UINT32_MAX

typedef struct {
    uint8_t tag;
    uint8_t flags;
    uint16_t kind;     /* T_STR: K_* */
    uint32_t aux;      /* T_STR: byte length; T_GLOBAL: global index; T_OBJ: hook index */
    Py_ssize_t pos;    /* T_STR: offset of the literal's bytes */
    Py_ssize_t start;  /* offset of the opcode that first pushed this stack slot */
} Item;

typedef struct {
    Py_ssize_t start;  /* where the callable's slot was pushed */
    Py_ssize_t end;    /* just after REDUCE/NEWOBJ, then just after BUILD */
    uint32_t gidx;
    uint8_t built;
    uint8_t copied;    /* a memo copy (or DUP) of it was pushed before it was built */
    uint8_t flags;     /* G_HOOKED | G_STATE_HOOKED of its global */
} Hook;

typedef struct {
    Py_ssize_t start;  /* where the state's slot was pushed */
    Py_ssize_t end;    /* the BUILD opcode that applies it */
    uint32_t gidx;
} StateSite;

typedef struct {
    Py_ssize_t off;    /* offset of the PUT, BINPUT, LONG_BINPUT or MEMOIZE opcode */
    Py_ssize_t end;    /* just after it */
    Py_ssize_t idx;    /* the memo index it writes */
} Put;

typedef struct {
    Py_ssize_t pos;    /* stack height when MARK ran */
    Py_ssize_t off;    /* offset of the MARK opcode */
} Mark;

typedef struct {
    const unsigned char *data;
    Py_ssize_t len;

    Item *stack;
    Py_ssize_t sp, scap, max_stack;

    Mark *marks;
    Py_ssize_t nmarks, mcap, max_marks, fence;

    Item *memo;
    Py_ssize_t memo_cap, max_memo;

    PyObject *hooks;       /* (module, name) -> G_HOOKED|G_STATE_HOOKED (dict) or a set */
    PyObject *glist;       /* list of (module, name) */
    PyObject *gindex;      /* dict (module, name) -> index */
    uint8_t *ghooked;      /* per global: G_* flags */
    Py_ssize_t gcap;

    Hook *hk;
    Py_ssize_t nhk, hkcap;

    StateSite *ss;
    Py_ssize_t nss, sscap;

    Put *puts;             /* the memo stores of F_BIG and F_CONT items, in stream order */
    Py_ssize_t nputs, pcap;

    Py_ssize_t *frames;    /* offsets of FRAME opcodes */
    Py_ssize_t nframes, fcap;

    Py_ssize_t frame_end;  /* -1 when not inside a frame */
    Py_ssize_t n_buffers, buffers_used;

    char msg[320];
    Py_ssize_t err_off;
    int py_error;          /* a Python exception (e.g. MemoryError) is already set */
} Scan;

static PyObject *ScanError;

static int
fail(Scan *s, Py_ssize_t off, const char *fmt, ...)
{
    va_list va;
    va_start(va, fmt);
    PyOS_vsnprintf(s->msg, sizeof(s->msg), fmt, va);
    va_end(va);
    s->err_off = off;
    return -1;
}

static int
nomem(Scan *s)
{
    PyErr_NoMemory();
    s->py_error = 1;
    return -1;
}

/* Room for one more element at the end of a growable array (`len` of its `*cap` in use), doubling
 * from `first` elements. */
static int
reserve(Scan *s, void **buf, Py_ssize_t len, Py_ssize_t *cap, size_t size, Py_ssize_t first)
{
    if (len < *cap)
        return 0;
    Py_ssize_t ncap = *cap ? *cap * 2 : first;
    void *n = PyMem_Realloc(*buf, (size_t)ncap * size);
    if (!n)
        return nomem(s);
    *buf = n;
    *cap = ncap;
    return 0;
}

static const char *
tag_name(uint8_t tag)
{
    switch (tag) {
    case T_STR: return "string";
    case T_GLOBAL: return "global (class or function)";
    case T_OBJ: return "constructed object";
    case T_BUFFER: return "out-of-band buffer";
    default: return "plain value";
    }
}

static uint64_t
rd_le(const unsigned char *p, int n)
{
    uint64_t v = 0;
    for (int k = n - 1; k >= 0; k--)
        v = (v << 8) | p[k];
    return v;
}

/* ------------------------------------------------------------------ stack */
static int
push_slow(Scan *s, Py_ssize_t off, Item it)
{
    if (s->sp >= s->max_stack)
        return fail(s, off, "stack depth exceeds %zd items", s->max_stack);
    Py_ssize_t ncap = s->scap ? s->scap * 2 : 256;
    if (ncap > s->max_stack)
        ncap = s->max_stack;
    Item *n = PyMem_Realloc(s->stack, (size_t)ncap * sizeof(Item));
    if (!n)
        return nomem(s);
    s->stack = n;
    s->scap = ncap;
    s->stack[s->sp++] = it;
    return 0;
}

static inline int
push(Scan *s, Py_ssize_t off, Item it)
{
    if (s->sp < s->scap) {
        s->stack[s->sp++] = it;
        return 0;
    }
    return push_slow(s, off, it);
}

static inline Item
plain(Py_ssize_t off)
{
    Item it = {T_ANY, 0, 0, 0, 0, off};
    return it;
}

/* How many items a tuple holds once the memo copies inside it are expanded (kept in `pos` of
 * a tuple's item; 1 for anything else). Hashing or printing a tuple visits all of them: 64
 * levels of (t, t) from memo copies are 2**64 visits from a stream of a kilobyte, a load that
 * never ends. Without shared copies the count is at most the number of opcodes. */
#define WEIGHT_CAP ((Py_ssize_t)1 << 40)

static inline Py_ssize_t
weight(const Item *it)
{
    return (it->tag == T_ANY && (it->flags & F_CONT) && it->pos > 0) ? it->pos : 1;
}

/* How deeply tuples and frozensets nest inside a tuple's item (kept in `aux` of a tuple's
 * item; 0 for anything else). CPython hashes a tuple by hashing its items, recursively and
 * without a depth check: a dictionary key of a million nested 1-tuples, two bytes each, ends
 * the process when the unpickler stores it. */
#define MAX_TUPLE_DEPTH 1000

static inline uint32_t
depth(const Item *it)
{
    return (it->tag == T_ANY && (it->flags & F_CONT) && it->pos > 0) ? it->aux : 0;
}

/* The weight and depth of a tuple (or frozenset) of the items from `from` to the top. */
static int
tuple_weight(Scan *s, Py_ssize_t off, Py_ssize_t from, Item *tuple)
{
    Py_ssize_t w = 1;
    uint32_t d = 0;
    for (Py_ssize_t k = from; k < s->sp; k++) {
        w += weight(&s->stack[k]);
        if (w > WEIGHT_CAP)
            w = WEIGHT_CAP;
        if (depth(&s->stack[k]) > d)
            d = depth(&s->stack[k]);
    }
    if (w > s->len * 16 + ((Py_ssize_t)1 << 20))
        return fail(s, off, "a tuple repeats shared items into %zd nested items; hashing or "
                            "printing it would take that many steps", w);
    if (d + 1 > MAX_TUPLE_DEPTH)
        return fail(s, off, "tuples nest more than %d levels deep; hashing one recurses as "
                            "deeply and would overflow the stack", MAX_TUPLE_DEPTH);
    tuple->pos = w;
    tuple->aux = d + 1;
    return 0;
}

/* at least n items above the innermost MARK */
static inline int
need_items(Scan *s, Py_ssize_t off, Py_ssize_t n, const char *opname)
{
    if (s->sp - s->fence < n)
        return fail(s, off, "%s needs %zd stack item(s) but %s", opname, n,
                    s->nmarks ? "the innermost MARK leaves fewer" : "the stack holds fewer");
    return 0;
}

static int
pop_mark(Scan *s, Py_ssize_t off, const char *opname, Py_ssize_t *mark, Py_ssize_t *mark_off)
{
    if (s->nmarks == 0)
        return fail(s, off, "%s without a matching MARK", opname);
    s->nmarks--;
    *mark = s->marks[s->nmarks].pos;
    *mark_off = s->marks[s->nmarks].off;
    s->fence = s->nmarks ? s->marks[s->nmarks - 1].pos : 0;
    return 0;
}

/* Items lo..hi-1 become values (container items, a state, the result): none may be a global
 * the loader only hands out as a stand-in for calls (G_CALL_ONLY). */
static int
check_values(Scan *s, Py_ssize_t off, Py_ssize_t lo, Py_ssize_t hi, const char *opname)
{
    for (Py_ssize_t k = lo; k < hi; k++) {
        const Item *t = &s->stack[k];
        if (t->tag != T_GLOBAL || !(s->ghooked[t->aux] & G_CALL_ONLY))
            continue;
        PyObject *key = PyList_GET_ITEM(s->glist, t->aux);
        const char *mod = PyUnicode_AsUTF8(PyTuple_GET_ITEM(key, 0));
        const char *name = mod ? PyUnicode_AsUTF8(PyTuple_GET_ITEM(key, 1)) : NULL;
        if (!name) {
            s->py_error = 1;
            return -1;
        }
        return fail(s, off, "%s holds %s.%s as a value; honest pickles only call it", opname,
                    mod, name);
    }
    return 0;
}

static int
check_target(Scan *s, Py_ssize_t off, const Item *t, const char *opname)
{
    if (t->tag == T_GLOBAL)
        return fail(s, off, "%s would modify a global (class or function) in place", opname);
    /* item assignment reaches an array's data (arr[i] = ...): a checked object changes only
     * through its one BUILD, which its check follows */
    if (t->tag == T_OBJ && t->aux != NO_HOOK)
        return fail(s, off, "%s would modify a validated object (an array, a tree, a matrix) "
                            "outside its state", opname);
    if (t->flags & F_DATA)
        return fail(s, off, "%s would modify an array's bytes in place (a bytearray, a buffer "
                            "or an array made on one)", opname);
    return 0;
}

/* ------------------------------------------------------------------ input */
/* the n argument bytes at i exist and do not cross the current frame's end */
static inline int
need_bytes(Scan *s, Py_ssize_t off, Py_ssize_t i, uint64_t n, const char *what)
{
    uint64_t left = (uint64_t)(s->len - i);
    if (n > left)
        return fail(s, off, "%s declares %llu bytes but only %llu remain", what,
                    (unsigned long long)n, (unsigned long long)left);
    if (s->frame_end >= 0 && (uint64_t)(s->frame_end - i) < n)
        return fail(s, off, "%s crosses the end of its FRAME", what);
    return 0;
}

static int
read_line(Scan *s, Py_ssize_t off, Py_ssize_t i, Py_ssize_t *linelen, const char *what)
{
    Py_ssize_t limit = s->frame_end >= 0 ? s->frame_end : s->len;
    const unsigned char *nl = memchr(s->data + i, '\n', (size_t)(limit - i));
    if (!nl)
        return fail(s, off, "%s argument is not terminated by a newline", what);
    *linelen = (Py_ssize_t)(nl - (s->data + i));
    return 0;
}

static int
parse_index(Scan *s, Py_ssize_t off, Py_ssize_t i, Py_ssize_t n, Py_ssize_t *out,
            const char *what)
{
    Py_ssize_t v = 0;
    if (n == 0 || n > 18)
        return fail(s, off, "%s argument is not a decimal memo index", what);
    for (Py_ssize_t k = 0; k < n; k++) {
        unsigned char c = s->data[i + k];
        if (c < '0' || c > '9')
            return fail(s, off, "%s argument is not a decimal memo index", what);
        v = v * 10 + (c - '0');
    }
    *out = v;
    return 0;
}

/* ------------------------------------------------------------------ memo */
static int
memo_put(Scan *s, Py_ssize_t off, Py_ssize_t end, Py_ssize_t idx, Py_ssize_t *count,
         const char *opname)
{
    if (s->sp <= s->fence)
        return fail(s, off, "%s with nothing to store", opname);
    if (idx < 0 || idx >= s->max_memo)
        return fail(s, off,
                    "%s index %zd is beyond what a stream of this size can hold (limit %zd); "
                    "an unpickler would allocate memory for it", opname, idx, s->max_memo);
    if (idx >= s->memo_cap) {
        Py_ssize_t ncap = s->memo_cap ? s->memo_cap : 64;
        while (ncap <= idx)
            ncap *= 2;
        if (ncap > s->max_memo)
            ncap = s->max_memo;
        Item *n = PyMem_Realloc(s->memo, (size_t)ncap * sizeof(Item));
        if (!n)
            return nomem(s);
        memset(n + s->memo_cap, 0, (size_t)(ncap - s->memo_cap) * sizeof(Item));
        s->memo = n;
        s->memo_cap = ncap;
    }
    if (!(s->memo[idx].flags & F_SET))
        (*count)++;
    Item it = s->stack[s->sp - 1];
    uint8_t kept = it.flags & (F_BIG | F_CONT);
    it.flags = F_COPY | F_SET | kept | (it.flags & F_DATA) | (s->memo[idx].flags & F_READ);
    s->memo[idx] = it;
    if (!kept)
        return 0; /* a small scalar or a string: not worth forgetting */
    if (reserve(s, (void **)&s->puts, s->nputs, &s->pcap, sizeof(Put), 64) < 0)
        return -1;
    Put put = {off, end, idx};
    s->puts[s->nputs++] = put;
    return 0;
}

/* A copy of an object that will be validated once built must not be taken before it is
 * built: it would reach other objects (and their validators) while still unchecked. */
static void
note_copy(Scan *s, const Item *it)
{
    if (it->tag == T_OBJ && it->aux != NO_HOOK && !s->hk[it->aux].built)
        s->hk[it->aux].copied = 1;
}

static int
memo_get(Scan *s, Py_ssize_t off, Py_ssize_t idx, const char *opname)
{
    if (idx < 0 || idx >= s->memo_cap || !(s->memo[idx].flags & F_SET))
        return fail(s, off, "%s of memo index %zd, which was never stored", opname, idx);
    if (s->memo[idx].tag == T_BUFFER)
        return fail(s, off, "%s of an out-of-band buffer: honest pickles use each buffer once "
                    "(a second use could give its bytes to a second array)", opname);
    note_copy(s, &s->memo[idx]);
    s->memo[idx].flags |= F_READ;
    Item it = s->memo[idx];
    it.flags = F_COPY | (it.flags & (F_BIG | F_CONT | F_DATA));
    it.start = off;
    return push(s, off, it);
}

/* ------------------------------------------------------------------ globals */
static int
add_global(Scan *s, Py_ssize_t off, PyObject *module, PyObject *name, uint32_t *gidx)
{
    /* steals references to module and name */
    PyObject *key = PyTuple_Pack(2, module, name);
    Py_DECREF(module);
    Py_DECREF(name);
    if (!key) {
        s->py_error = 1;
        return -1;
    }
    PyObject *found = PyDict_GetItemWithError(s->gindex, key);
    if (found) {
        *gidx = (uint32_t)PyLong_AsSsize_t(found);
        Py_DECREF(key);
        return 0;
    }
    if (PyErr_Occurred())
        goto pyerr;
    Py_ssize_t n = PyList_GET_SIZE(s->glist);
    if (n >= (Py_ssize_t)UINT32_MAX - 1) {
        Py_DECREF(key);
        return fail(s, off, "too many distinct globals");
    }
    if (n == s->gcap) {
        Py_ssize_t ncap = s->gcap ? s->gcap * 2 : 64;
        uint8_t *g = PyMem_Realloc(s->ghooked, (size_t)ncap);
        if (!g) {
            Py_DECREF(key);
            return nomem(s);
        }
        s->ghooked = g;
        s->gcap = ncap;
    }
    int hooked = 0;
    if (s->hooks && PyDict_Check(s->hooks)) {
        PyObject *mode = PyDict_GetItemWithError(s->hooks, key);
        if (mode) {
            long v = PyLong_AsLong(mode);
            if (v == -1 && PyErr_Occurred())
                goto pyerr;
            hooked = (int)(v & (G_HOOKED | G_STATE_HOOKED | G_CALL_ONLY | G_DATA));
        }
        else if (PyErr_Occurred())
            goto pyerr;
    }
    else if (s->hooks) {
        hooked = PySet_Contains(s->hooks, key);
        if (hooked < 0)
            goto pyerr;
        hooked = hooked ? G_HOOKED : 0;
    }
    PyObject *idx = PyLong_FromSsize_t(n);
    if (!idx)
        goto pyerr;
    if (PyDict_SetItem(s->gindex, key, idx) < 0 || PyList_Append(s->glist, key) < 0) {
        Py_DECREF(idx);
        goto pyerr;
    }
    Py_DECREF(idx);
    Py_DECREF(key);
    s->ghooked[n] = (uint8_t)hooked;
    *gidx = (uint32_t)n;
    return 0;
pyerr:
    Py_DECREF(key);
    s->py_error = 1;
    return -1;
}

static PyObject *
decode_str(Scan *s, Py_ssize_t off, const Item *it, const char *role)
{
    const char *p = (const char *)s->data + it->pos;
    PyObject *r;
    if (it->aux > 1000) {
        fail(s, off, "STACK_GLOBAL %s name is %u bytes long", role, it->aux);
        return NULL;
    }
    if (it->kind == K_UTF8)
        r = PyUnicode_DecodeUTF8(p, it->aux, "surrogatepass");
    else if (it->kind == K_ASCII)
        r = PyUnicode_DecodeASCII(p, it->aux, "strict");
    else
        r = PyUnicode_DecodeRawUnicodeEscape(p, it->aux, NULL);
    if (!r) {
        PyErr_Clear();
        fail(s, off, "STACK_GLOBAL %s name is not a decodable string", role);
    }
    return r;
}

/* ------------------------------------------------------------------ calls and builds */
static int
make_object(Scan *s, Py_ssize_t off, Py_ssize_t end, Py_ssize_t nargs, const char *opname)
{
    if (need_items(s, off, nargs + 1, opname) < 0)
        return -1;
    Item *callee = &s->stack[s->sp - nargs - 1];
    if (callee->tag != T_GLOBAL)
        return fail(s, off, "%s would call a %s; only globals may be called", opname,
                    tag_name(callee->tag));
    uint32_t hook = NO_HOOK;
    s->ghooked[callee->aux] |= G_CALLED | (nargs == 1 && opname[0] == 'R' ? G_REDUCED : 0);
    uint8_t gflags = s->ghooked[callee->aux] & (G_HOOKED | G_STATE_HOOKED);
    if (gflags) {
        if (reserve(s, (void **)&s->hk, s->nhk, &s->hkcap, sizeof(Hook), 16) < 0)
            return -1;
        if (s->nhk >= (Py_ssize_t)UINT32_MAX - 1)
            return fail(s, off, "too many validated objects");
        Hook h = {callee->start, end, callee->aux, 0, 0, gflags};
        s->hk[s->nhk] = h;
        hook = (uint32_t)s->nhk++;
    }
    uint8_t data = s->ghooked[callee->aux] & G_DATA ? F_DATA : 0;
    Item obj = {T_OBJ, (uint8_t)(F_CONT | data), 0, hook, 0, callee->start};
    s->sp -= nargs;
    s->stack[s->sp - 1] = obj;
    return 0;
}

static int
build(Scan *s, Py_ssize_t off, Py_ssize_t end)
{
    if (need_items(s, off, 2, "BUILD") < 0 || check_values(s, off, s->sp - 1, s->sp, "BUILD") < 0)
        return -1;
    Item *t = &s->stack[s->sp - 2];
    if (t->tag == T_GLOBAL)
        return fail(s, off, "BUILD would set attributes on a global (class or function), "
                            "changing it for the whole process");
    if (t->tag != T_OBJ)
        return fail(s, off, "BUILD on a %s; only objects made by REDUCE/NEWOBJ take state",
                    tag_name(t->tag));
    if (t->flags & F_DATA)
        return fail(s, off, "BUILD would re-fill an array made on a buffer in place");
    if (t->aux != NO_HOOK) {
        /* A checked object (or one whose state is checked: an array) takes state once, through
         * the stack slot that made it, before any copy of it is used: a second BUILD would
         * change it after its check, and after the checks of the objects holding it (an
         * array re-filled under a tree that was validated with its first contents). */
        Hook *h = &s->hk[t->aux];
        if (t->flags & F_COPY)
            return fail(s, off, "BUILD on a memo copy of a validated object");
        if (h->built)
            return fail(s, off, "second BUILD on the same validated object");
        if (h->copied)
            return fail(s, off, "BUILD on a validated object after a copy of it was used; the "
                                "copy would have reached other objects unchecked");
        if (h->flags & G_STATE_HOOKED) {
            if (reserve(s, (void **)&s->ss, s->nss, &s->sscap, sizeof(StateSite), 16) < 0)
                return -1;
            StateSite site = {s->stack[s->sp - 1].start, off, h->gidx};
            s->ss[s->nss++] = site;
        }
        h->built = 1;
        if (h->flags & G_HOOKED)
            h->end = end;
    }
    s->sp--;
    return 0;
}

/* ------------------------------------------------------------------ main loop */
static const char *
opname_of(unsigned char op)
{
    switch (op) {
    case OP_PERSID: return "PERSID";
    case OP_BINPERSID: return "BINPERSID";
    case OP_EXT1: return "EXT1";
    case OP_EXT2: return "EXT2";
    case OP_EXT4: return "EXT4";
    case OP_INST: return "INST";
    case OP_OBJ: return "OBJ";
    default: return NULL;
    }
}

static signed char op_proto[256];

static void
init_proto_table(void)
{
    memset(op_proto, -1, sizeof(op_proto));
    const char *p0 = "(.012FIJKLMNPRSVXabcd}eghijl]opqrst)uG";
    for (const char *c = p0; *c; c++)
        op_proto[(unsigned char)*c] = 0;
    const char *p1 = "JKMGQTUXhjqr}]e)u1o";
    for (const char *c = p1; *c; c++)
        op_proto[(unsigned char)*c] = 1;
    for (int op = 0x80; op <= 0x8b; op++)
        op_proto[op] = 2;
    op_proto['B'] = op_proto['C'] = 3;
    for (int op = 0x8c; op <= 0x95; op++)
        op_proto[op] = 4;
    for (int op = 0x96; op <= 0x98; op++)
        op_proto[op] = 5;
}

static int
run(Scan *s, int *declared, int *maxproto)
{
    const unsigned char *d = s->data;
    Py_ssize_t i = 0, len = s->len, memo_count = 0;
    int stopped = 0;

    while (i < len) {
        Py_ssize_t off = i;
        if (s->frame_end >= 0 && i == s->frame_end)
            s->frame_end = -1;
        unsigned char op = d[i++];
        if (op_proto[op] > *maxproto)
            *maxproto = op_proto[op];
        uint64_t n;
        Py_ssize_t ll = 0, idx = 0, m = 0, moff = 0;
        Item it;

        switch (op) {
        /* ---- structure */
        case OP_PROTO:
            if (need_bytes(s, off, i, 1, "PROTO") < 0)
                return -1;
            if (off != 0)
                return fail(s, off, "PROTO is only allowed as the first opcode");
            if (d[i] > 5)
                return fail(s, off, "unsupported pickle protocol %d", d[i]);
            *declared = d[i];
            i += 1;
            break;
        case OP_FRAME:
            if (s->frame_end >= 0)
                return fail(s, off, "FRAME starts before the previous frame ended");
            if (need_bytes(s, off, i, 8, "FRAME") < 0)
                return -1;
            n = rd_le(d + i, 8);
            i += 8;
            if (n > (uint64_t)(len - i))
                return fail(s, off, "FRAME declares %llu bytes but only %zd remain",
                            (unsigned long long)n, len - i);
            s->frame_end = i + (Py_ssize_t)n;
            if (reserve(s, (void **)&s->frames, s->nframes, &s->fcap, sizeof(Py_ssize_t),
                        16) < 0)
                return -1;
            s->frames[s->nframes++] = off;
            break;
        case OP_STOP:
            if (s->nmarks)
                return fail(s, off, "STOP with %zd unclosed MARK(s)", s->nmarks);
            if (s->sp != 1)
                return fail(s, off, "STOP with %zd items on the stack instead of 1", s->sp);
            if (check_values(s, off, 0, 1, "STOP") < 0)
                return -1;
            if (i != len)
                return fail(s, off, "%zd bytes of trailing data after STOP", len - i);
            stopped = 1;
            break;
        case OP_MARK:
            if (s->nmarks == s->mcap) {
                if (s->nmarks >= s->max_marks)
                    return fail(s, off, "MARKs nested deeper than %zd", s->max_marks);
                Py_ssize_t ncap = s->mcap ? s->mcap * 2 : 64;
                if (ncap > s->max_marks)
                    ncap = s->max_marks;
                Mark *nm = PyMem_Realloc(s->marks, (size_t)ncap * sizeof(Mark));
                if (!nm)
                    return nomem(s);
                s->marks = nm;
                s->mcap = ncap;
            }
            s->marks[s->nmarks].pos = s->sp;
            s->marks[s->nmarks].off = off;
            s->nmarks++;
            s->fence = s->sp;
            break;
        case OP_POP:
            if (s->nmarks && s->marks[s->nmarks - 1].pos == s->sp) {
                s->nmarks--;
                s->fence = s->nmarks ? s->marks[s->nmarks - 1].pos : 0;
            }
            else {
                if (need_items(s, off, 1, "POP") < 0)
                    return -1;
                s->sp--;
            }
            break;
        case OP_POP_MARK:
            if (pop_mark(s, off, "POP_MARK", &m, &moff) < 0)
                return -1;
            s->sp = m;
            break;
        case OP_DUP:
            if (need_items(s, off, 1, "DUP") < 0)
                return -1;
            if (s->stack[s->sp - 1].tag == T_BUFFER)
                return fail(s, off, "DUP of an out-of-band buffer: honest pickles use each "
                            "buffer once (a second use could give its bytes to a second array)");
            note_copy(s, &s->stack[s->sp - 1]);
            it = s->stack[s->sp - 1];
            it.flags = F_COPY | (it.flags & (F_BIG | F_CONT | F_DATA));
            it.start = off;
            if (push(s, off, it) < 0)
                return -1;
            break;

        /* ---- refused */
        case OP_PERSID: case OP_BINPERSID: case OP_EXT1: case OP_EXT2: case OP_EXT4:
        case OP_INST: case OP_OBJ:
            return fail(s, off, "opcode %s is not allowed (it can %s)", opname_of(op),
                        (op == OP_PERSID || op == OP_BINPERSID)
                            ? "hand data to an external loader"
                            : (op == OP_INST || op == OP_OBJ)
                                  ? "call any class found on the stack"
                                  : "load any registered extension object");

        /* ---- text (protocol 0) scalars */
        case OP_INT: case OP_LONG: case OP_FLOAT: case OP_STRING:
            if (read_line(s, off, i, &ll, "text scalar") < 0)
                return -1;
            i += ll + 1;
            if (push(s, off, plain(off)) < 0)
                return -1;
            break;
        case OP_UNICODE:
            if (read_line(s, off, i, &ll, "UNICODE") < 0)
                return -1;
            it = plain(off);
            if ((uint64_t)ll <= UINT32_MAX) {
                it.tag = T_STR; it.kind = K_RAWUNI; it.aux = (uint32_t)ll; it.pos = i;
            }
            i += ll + 1;
            if (ll >= BIG_BYTES)
                it.flags = F_BIG;
            if (push(s, off, it) < 0)
                return -1;
            break;

        /* ---- fixed-size binary scalars */
        case OP_BININT: case OP_BININT1: case OP_BININT2: case OP_BINFLOAT:
            n = op == OP_BININT ? 4 : op == OP_BININT1 ? 1 : op == OP_BININT2 ? 2 : 8;
            if (need_bytes(s, off, i, n, "number") < 0)
                return -1;
            i += (Py_ssize_t)n;
            if (push(s, off, plain(off)) < 0)
                return -1;
            break;
        case OP_NONE: case OP_NEWTRUE: case OP_NEWFALSE: case OP_EMPTY_TUPLE:
            if (push(s, off, plain(off)) < 0)
                return -1;
            break;
        case OP_EMPTY_DICT: case OP_EMPTY_LIST: case OP_EMPTY_SET:
            it = plain(off);
            it.flags = F_CONT;
            if (push(s, off, it) < 0)
                return -1;
            break;

        /* ---- length-prefixed data */
        case OP_LONG1: case OP_LONG4:
        case OP_SHORT_BINSTRING: case OP_BINSTRING:
        case OP_SHORT_BINBYTES: case OP_BINBYTES: case OP_BINBYTES8: case OP_BYTEARRAY8:
        case OP_SHORT_BINUNICODE: case OP_BINUNICODE: case OP_BINUNICODE8: {
            int w = (op == OP_LONG1 || op == OP_SHORT_BINSTRING || op == OP_SHORT_BINBYTES ||
                     op == OP_SHORT_BINUNICODE) ? 1
                    : (op == OP_BINBYTES8 || op == OP_BYTEARRAY8 || op == OP_BINUNICODE8) ? 8
                    : 4;
            if (need_bytes(s, off, i, (uint64_t)w, "length prefix") < 0)
                return -1;
            n = rd_le(d + i, w);
            if ((op == OP_LONG4 || op == OP_BINSTRING) && (n & 0x80000000u))
                return fail(s, off, "negative byte count");
            i += w;
            if (need_bytes(s, off, i, n, "length-prefixed data") < 0)
                return -1;
            it = plain(off);
            if (n <= UINT32_MAX && (op == OP_SHORT_BINUNICODE || op == OP_BINUNICODE ||
                                    op == OP_BINUNICODE8 || op == OP_SHORT_BINSTRING ||
                                    op == OP_BINSTRING)) {
                it.tag = T_STR;
                it.kind = (op == OP_SHORT_BINSTRING || op == OP_BINSTRING) ? K_ASCII : K_UTF8;
                it.aux = (uint32_t)n;
                it.pos = i;
            }
            i += (Py_ssize_t)n;
            if (n >= BIG_BYTES)
                it.flags = F_BIG;
            if (op == OP_BYTEARRAY8)
                it.flags |= F_DATA;
            if (push(s, off, it) < 0)
                return -1;
            break;
        }

        /* ---- containers */
        case OP_APPEND:
            if (need_items(s, off, 2, "APPEND") < 0 ||
                check_target(s, off, &s->stack[s->sp - 2], "APPEND") < 0 ||
                check_values(s, off, s->sp - 1, s->sp, "APPEND") < 0)
                return -1;
            s->sp -= 1;
            break;
        case OP_SETITEM:
            if (need_items(s, off, 3, "SETITEM") < 0 ||
                check_target(s, off, &s->stack[s->sp - 3], "SETITEM") < 0 ||
                check_values(s, off, s->sp - 2, s->sp, "SETITEM") < 0)
                return -1;
            s->sp -= 2;
            break;
        case OP_APPENDS: case OP_SETITEMS: case OP_ADDITEMS: {
            const char *nm = op == OP_APPENDS ? "APPENDS" : op == OP_SETITEMS ? "SETITEMS"
                                                                               : "ADDITEMS";
            if (pop_mark(s, off, nm, &m, &moff) < 0)
                return -1;
            if (m <= s->fence)
                return fail(s, off, "%s has no target below its MARK", nm);
            if (op == OP_SETITEMS && ((s->sp - m) & 1))
                return fail(s, off, "SETITEMS with an odd number of items");
            if (check_target(s, off, &s->stack[m - 1], nm) < 0 ||
                check_values(s, off, m, s->sp, nm) < 0)
                return -1;
            s->sp = m;
            break;
        }
        case OP_LIST: case OP_TUPLE: case OP_DICT: case OP_FROZENSET:
            if (pop_mark(s, off, "container opcode", &m, &moff) < 0)
                return -1;
            if (op == OP_DICT && ((s->sp - m) & 1))
                return fail(s, off, "DICT with an odd number of items");
            if (check_values(s, off, m, s->sp, "container opcode") < 0)
                return -1;
            it = plain(moff);  /* the slot began at its MARK */
            it.flags = F_CONT;
            if ((op == OP_TUPLE || op == OP_FROZENSET) && tuple_weight(s, off, m, &it) < 0)
                return -1;
            s->sp = m;
            if (push(s, off, it) < 0)
                return -1;
            break;
        case OP_TUPLE1: case OP_TUPLE2: case OP_TUPLE3:
            m = op - OP_TUPLE1 + 1;
            if (need_items(s, off, m, "TUPLEn") < 0 ||
                check_values(s, off, s->sp - m, s->sp, "TUPLEn") < 0)
                return -1;
            it = plain(s->stack[s->sp - m].start);
            it.flags = F_CONT;
            if (tuple_weight(s, off, s->sp - m, &it) < 0)
                return -1;
            s->sp -= m;
            s->stack[s->sp++] = it;
            break;

        /* ---- memo */
        case OP_PUT:
            if (read_line(s, off, i, &ll, "PUT") < 0 ||
                parse_index(s, off, i, ll, &idx, "PUT") < 0)
                return -1;
            i += ll + 1;
            if (memo_put(s, off, i, idx, &memo_count, "PUT") < 0)
                return -1;
            break;
        case OP_BINPUT: case OP_LONG_BINPUT:
            n = op == OP_BINPUT ? 1 : 4;
            if (need_bytes(s, off, i, n, "memo index") < 0)
                return -1;
            idx = (Py_ssize_t)rd_le(d + i, (int)n);
            i += (Py_ssize_t)n;
            if (memo_put(s, off, i, idx, &memo_count,
                         op == OP_BINPUT ? "BINPUT" : "LONG_BINPUT") < 0)
                return -1;
            break;
        case OP_MEMOIZE:
            if (memo_put(s, off, i, memo_count, &memo_count, "MEMOIZE") < 0)
                return -1;
            break;
        case OP_GET:
            if (read_line(s, off, i, &ll, "GET") < 0 ||
                parse_index(s, off, i, ll, &idx, "GET") < 0)
                return -1;
            i += ll + 1;
            if (memo_get(s, off, idx, "GET") < 0)
                return -1;
            break;
        case OP_BINGET: case OP_LONG_BINGET:
            n = op == OP_BINGET ? 1 : 4;
            if (need_bytes(s, off, i, n, "memo index") < 0)
                return -1;
            idx = (Py_ssize_t)rd_le(d + i, (int)n);
            i += (Py_ssize_t)n;
            if (memo_get(s, off, idx, op == OP_BINGET ? "BINGET" : "LONG_BINGET") < 0)
                return -1;
            break;

        /* ---- globals and calls */
        case OP_GLOBAL: {
            Py_ssize_t l1 = 0, l2 = 0;
            if (read_line(s, off, i, &l1, "GLOBAL module") < 0)
                return -1;
            if (read_line(s, off, i + l1 + 1, &l2, "GLOBAL name") < 0)
                return -1;
            PyObject *mod = PyUnicode_DecodeUTF8((const char *)d + i, l1, "strict");
            PyObject *name = mod ? PyUnicode_DecodeUTF8((const char *)d + i + l1 + 1, l2,
                                                        "strict") : NULL;
            if (!name) {
                Py_XDECREF(mod);
                PyErr_Clear();
                return fail(s, off, "GLOBAL names are not valid UTF-8");
            }
            i += l1 + l2 + 2;
            uint32_t g;
            if (add_global(s, off, mod, name, &g) < 0)
                return -1;
            Item gi = {T_GLOBAL, 0, 0, g, 0, off};
            if (push(s, off, gi) < 0)
                return -1;
            break;
        }
        case OP_STACK_GLOBAL: {
            if (need_items(s, off, 2, "STACK_GLOBAL") < 0)
                return -1;
            Item *mi = &s->stack[s->sp - 2], *ni = &s->stack[s->sp - 1];
            if (mi->tag != T_STR || ni->tag != T_STR)
                return fail(s, off, "STACK_GLOBAL operands must be string literals, got a %s "
                            "and a %s", tag_name(mi->tag), tag_name(ni->tag));
            PyObject *mod = decode_str(s, off, mi, "module");
            if (!mod)
                return -1;
            PyObject *name = decode_str(s, off, ni, "attribute");
            if (!name) {
                Py_DECREF(mod);
                return -1;
            }
            Py_ssize_t start = mi->start;
            uint32_t g;
            if (add_global(s, off, mod, name, &g) < 0)
                return -1;
            s->sp -= 2;
            Item gi = {T_GLOBAL, 0, 0, g, 0, start};
            s->stack[s->sp++] = gi;
            break;
        }
        case OP_REDUCE:
            if (make_object(s, off, i, 1, "REDUCE") < 0)
                return -1;
            break;
        case OP_NEWOBJ:
            if (make_object(s, off, i, 1, "NEWOBJ") < 0)
                return -1;
            break;
        case OP_NEWOBJ_EX:
            if (make_object(s, off, i, 2, "NEWOBJ_EX") < 0)
                return -1;
            break;
        case OP_BUILD:
            if (build(s, off, i) < 0)
                return -1;
            break;

        /* ---- out-of-band buffers */
        case OP_NEXT_BUFFER:
            if (s->buffers_used >= s->n_buffers)
                return fail(s, off, "NEXT_BUFFER #%zd but only %zd buffer(s) were supplied",
                            s->buffers_used + 1, s->n_buffers);
            s->buffers_used++;
            it = plain(off);
            it.tag = T_BUFFER;
            it.flags = F_BIG | F_DATA;
            if (push(s, off, it) < 0)
                return -1;
            break;
        case OP_READONLY_BUFFER:
            if (need_items(s, off, 1, "READONLY_BUFFER") < 0)
                return -1;
            if (s->stack[s->sp - 1].tag != T_BUFFER)
                return fail(s, off, "READONLY_BUFFER applied to a %s, not a buffer",
                            tag_name(s->stack[s->sp - 1].tag));
            break;

        default:
            return fail(s, off, "unknown opcode 0x%02x", op);
        }
        if (stopped)
            break;
    }
    if (!stopped)
        return fail(s, len, "the stream ends without STOP (truncated?)");
    return 0;
}

/* ------------------------------------------------------------------ module */
static PyObject *
build_result(Scan *s, int declared, int maxproto)
{
    PyObject *sites = PyList_New(0);
    if (!sites)
        return NULL;
    for (Py_ssize_t k = 0; k < s->nhk; k++) {
        if (!(s->hk[k].flags & G_HOOKED))
            continue;
        PyObject *t = Py_BuildValue("(nnIi)", s->hk[k].start, s->hk[k].end,
                                    (unsigned int)s->hk[k].gidx, SITE_OBJECT);
        if (!t || PyList_Append(sites, t) < 0) {
            Py_XDECREF(t);
            Py_DECREF(sites);
            return NULL;
        }
        Py_DECREF(t);
    }
    for (Py_ssize_t k = 0; k < s->nss; k++) {
        PyObject *t = Py_BuildValue("(nnIi)", s->ss[k].start, s->ss[k].end,
                                    (unsigned int)s->ss[k].gidx, SITE_STATE);
        if (!t || PyList_Append(sites, t) < 0) {
            Py_XDECREF(t);
            Py_DECREF(sites);
            return NULL;
        }
        Py_DECREF(t);
    }
    Py_ssize_t ng = PyList_GET_SIZE(s->glist);
    /* called: (global index, 1 if REDUCE calls it with arguments, else 0) */
    PyObject *called = PyList_New(0);
    if (!called) {
        Py_DECREF(sites);
        return NULL;
    }
    for (Py_ssize_t k = 0; k < ng; k++) {
        if (!(s->ghooked[k] & G_CALLED))
            continue;
        PyObject *v = Py_BuildValue("(ni)", k, (s->ghooked[k] & G_REDUCED) ? 1 : 0);
        if (!v || PyList_Append(called, v) < 0) {
            Py_XDECREF(v);
            Py_DECREF(sites);
            Py_DECREF(called);
            return NULL;
        }
        Py_DECREF(v);
    }
    PyObject *frames = PyList_New(s->nframes);
    if (!frames) {
        Py_DECREF(sites);
        Py_DECREF(called);
        return NULL;
    }
    for (Py_ssize_t k = 0; k < s->nframes; k++) {
        PyObject *v = PyLong_FromSsize_t(s->frames[k]);
        if (!v) {
            Py_DECREF(sites);
            Py_DECREF(called);
            Py_DECREF(frames);
            return NULL;
        }
        PyList_SET_ITEM(frames, k, v);
    }
    /* the memo stores of buffers, large literals, containers and objects that nothing reads
     * back: (offset, end) pairs as little-endian int64 */
    Py_ssize_t nforget = 0;
    for (Py_ssize_t k = 0; k < s->nputs; k++) {
        const Put *p = &s->puts[k];
        if (!(s->memo[p->idx].flags & F_READ))
            s->puts[nforget++] = *p;
    }
    PyObject *forget = PyBytes_FromStringAndSize(NULL, nforget * 16);
    if (!forget) {
        Py_DECREF(sites);
        Py_DECREF(called);
        Py_DECREF(frames);
        return NULL;
    }
    unsigned char *fo = (unsigned char *)PyBytes_AS_STRING(forget);
    for (Py_ssize_t k = 0; k < nforget; k++) {
        uint64_t pair[2] = {(uint64_t)s->puts[k].off, (uint64_t)s->puts[k].end};
        for (int h = 0; h < 2; h++)
            for (int b = 0; b < 8; b++)
                *fo++ = (unsigned char)((pair[h] >> (8 * b)) & 0xFF);
    }
    return Py_BuildValue("(OiinNNNN)", s->glist, declared, maxproto, s->buffers_used, sites,
                         called, frames, forget);
}

static PyObject *
scan(PyObject *self, PyObject *args, PyObject *kwds)
{
    static char *kwlist[] = {"data", "n_buffers", "max_memo", "hooks", "max_stack",
                             "max_marks", NULL};
    Py_buffer view;
    Py_ssize_t n_buffers = 0, max_memo = 0, max_stack = 1 << 24, max_marks = 10000;
    PyObject *hooks = NULL;
    if (!PyArg_ParseTupleAndKeywords(args, kwds, "y*nn|Onn:scan", kwlist, &view, &n_buffers,
                                     &max_memo, &hooks, &max_stack, &max_marks))
        return NULL;
    if (hooks == Py_None)
        hooks = NULL;
    if (hooks && !PyAnySet_Check(hooks) && !PyDict_Check(hooks)) {
        PyBuffer_Release(&view);
        PyErr_SetString(PyExc_TypeError,
                        "hooks must be a set of (module, name) or a dict (module, name) -> mode");
        return NULL;
    }
    if (n_buffers < 0 || max_memo < 0 || max_stack < 1 || max_marks < 0) {
        PyBuffer_Release(&view);
        PyErr_SetString(PyExc_ValueError, "limits must be non-negative");
        return NULL;
    }

    Scan s;
    memset(&s, 0, sizeof(s));
    s.data = view.buf;
    s.len = view.len;
    s.max_stack = max_stack;
    s.max_marks = max_marks;
    s.max_memo = max_memo;
    s.hooks = hooks;
    s.frame_end = -1;
    s.n_buffers = n_buffers;
    s.glist = PyList_New(0);
    s.gindex = PyDict_New();

    PyObject *result = NULL;
    int declared = -1, maxproto = 0;
    if (s.glist && s.gindex) {
        if (run(&s, &declared, &maxproto) == 0)
            result = build_result(&s, declared, maxproto);
        else if (!s.py_error && !PyErr_Occurred()) {
            PyObject *eargs = Py_BuildValue("(sn)", s.msg, s.err_off);
            if (eargs) {
                PyErr_SetObject(ScanError, eargs);
                Py_DECREF(eargs);
            }
        }
    }
    Py_XDECREF(s.glist);
    Py_XDECREF(s.gindex);
    PyMem_Free(s.stack);
    PyMem_Free(s.marks);
    PyMem_Free(s.memo);
    PyMem_Free(s.ghooked);
    PyMem_Free(s.hk);
    PyMem_Free(s.ss);
    PyMem_Free(s.frames);
    PyMem_Free(s.puts);
    PyBuffer_Release(&view);
    return result;
}

static int64_t
read_link(const char *rec, Py_ssize_t off, Py_ssize_t width)
{
    if (width == 8) {
        int64_t v;
        memcpy(&v, rec + off, 8);
        return v;
    }
    uint32_t v;
    memcpy(&v, rec + off, 4);
    return (int64_t)v;
}

/* tree_nodes(nodes, itemsize, left_off, right_off, link_bytes, leaf_off, feature_off, cat_off,
 * bitset_off): child-link checks run straight on a contiguous buffer of node records (a
 * structured array of n records of itemsize bytes, native byte order, fields possibly
 * unaligned), plus a summary of the split nodes, so that one call replaces a dozen numpy
 * passes over a small tree.
 *   - links: int64 (link_bytes 8) or uint32 (4) at left_off and right_off;
 *   - split nodes: those whose byte at leaf_off is 0, or with leaf_off -1, those whose left
 *     link is not -1 (a node whose two links disagree on that is refused);
 *   - feature_off: the int64 feature index of a split; cat_off (-1 for none): a byte that
 *     marks a categorical split, whose uint32 bitset row is at bitset_off.
 * Returns (depth, min split feature, max split feature, categorical splits, max bitset row),
 * with min 0, max -1 when there is no split and max bitset row -1 when none is categorical.
 * Raises ValueError naming the first problem. */
/* What one pass over the records found; fail names the first problem (NULL if none). */
typedef struct {
    int32_t deepest;
    int64_t min_feature, max_feature, max_bitset;
    Py_ssize_t n_cat, n_split;
    const char *fail;
} TreeSummary;

/* A pass's findings into `s`: the feature range is (0, -1) when no node splits. */
static inline void
summarize(TreeSummary *s, int32_t deepest, int64_t min_feature, int64_t max_feature,
          int64_t max_bitset, Py_ssize_t n_cat, Py_ssize_t n_split)
{
    s->deepest = deepest;
    s->min_feature = n_split ? min_feature : 0;
    s->max_feature = n_split ? max_feature : -1;
    s->max_bitset = max_bitset;
    s->n_cat = n_cat;
    s->n_split = n_split;
}

/* The pass itself. Leaves send their (unused) links to a sink slot n of parents and depth,
 * so that a node costs the same whether it splits or not: which it is follows no pattern, and
 * a branch on it was mispredicted about every other node. Inlined into tree_nodes once per
 * (link width, leaf flag or not), so that both are constants in each copy. */
static inline void
walk_nodes(TreeSummary *s, const char *base, Py_ssize_t n, Py_ssize_t itemsize,
           Py_ssize_t left_off, Py_ssize_t right_off, const int link_bytes,
           const Py_ssize_t leaf_off, Py_ssize_t feature_off, Py_ssize_t cat_off,
           Py_ssize_t bitset_off, uint8_t *parents, int32_t *depth)
{
    int32_t deepest = 0;
    int64_t min_feature = INT64_MAX, max_feature = INT64_MIN, max_bitset = -1;
    Py_ssize_t n_cat = 0, n_split = 0;
    for (Py_ssize_t i = 0; i < n; i++) {
        const char *rec = base + i * itemsize;
        int64_t left = read_link(rec, left_off, link_bytes);
        int64_t right = read_link(rec, right_off, link_bytes);
        int split;
        if (leaf_off >= 0)
            split = rec[leaf_off] == 0;
        else {
            split = left != -1;
            if (split != (right != -1)) {
                s->fail = "a node has exactly one child";
                return;
            }
        }
        /* a child must come after its parent and inside the array: 0 <= c - i - 1 < n - i - 1 */
        uint64_t room = (uint64_t)(n - i - 1);
        int out = ((uint64_t)(left - i - 1) >= room) | ((uint64_t)(right - i - 1) >= room);
        Py_ssize_t lc = split ? (Py_ssize_t)left : n;
        Py_ssize_t rc = split ? (Py_ssize_t)right : n;
        if (split & out) {
            s->fail = "a child index is out of range or points back up the tree";
            return;
        }
        if (split & (parents[lc] | parents[rc] | (lc == rc))) {
            s->fail = "a node has no parent or more than one";
            return;
        }
        parents[lc] = parents[rc] = 1;
        int32_t d = depth[i] + 1;
        depth[lc] = depth[rc] = d;
        d = split ? d : 0;
        deepest = d > deepest ? d : deepest;
        int64_t f;
        memcpy(&f, rec + feature_off, 8);
        int64_t lo = split ? f : INT64_MAX, hi = split ? f : INT64_MIN;
        min_feature = lo < min_feature ? lo : min_feature;
        max_feature = hi > max_feature ? hi : max_feature;
        n_split += split;
        if (cat_off >= 0) {
            uint32_t row;
            memcpy(&row, rec + bitset_off, 4);
            int cat = split & (rec[cat_off] != 0);
            int64_t r = cat ? (int64_t)row : -1;
            n_cat += cat;
            max_bitset = r > max_bitset ? r : max_bitset;
        }
    }
    if (n > 1 && memchr(parents + 1, 0, (size_t)(n - 1)) != NULL) {
        s->fail = "a node has no parent or more than one";
        return;
    }
    summarize(s, deepest, min_feature, max_feature, max_bitset, n_cat, n_split);
}

/* The common case in one sequential pass, without the scratch arrays of walk_nodes: both
 * scikit-learn's depth-first tree builder and the boosting grower number nodes in preorder
 * (a split's left child right after it, its right child right after the left subtree). The
 * stack holds the right children not yet reached and their depths; a leaf is followed by the
 * most recently pushed one, and the last node is a leaf with nothing left pending. That
 * accepts exactly the trees laid out in preorder: every node but the root is reached once,
 * as a left child or a pending right one, so it has one parent, and links only point
 * forward. Returns 1 with `s` filled, 0 when the records are not such a tree (best-first
 * builders number otherwise; a malformed tree): walk_nodes then decides and names the
 * problem. `stack` has room for `room` entries: a tree deeper than that goes to walk_nodes too. */
typedef struct {
    int64_t node;
    int32_t depth;
} Pending;

static inline int
walk_preorder(TreeSummary *s, const char *base, Py_ssize_t n, Py_ssize_t itemsize,
              Py_ssize_t left_off, Py_ssize_t right_off, const int link_bytes,
              const Py_ssize_t leaf_off, Py_ssize_t feature_off, Py_ssize_t cat_off,
              Py_ssize_t bitset_off, Pending *stack, Py_ssize_t room)
{
    int32_t deepest = 0, depth = 0;
    int64_t min_feature = INT64_MAX, max_feature = INT64_MIN, max_bitset = -1;
    Py_ssize_t n_cat = 0, n_split = 0, sp = 0;
    for (Py_ssize_t i = 0; i < n; i++) {
        const char *rec = base + i * itemsize;
        int64_t left = read_link(rec, left_off, link_bytes);
        int64_t right = read_link(rec, right_off, link_bytes);
        int split = leaf_off >= 0 ? rec[leaf_off] == 0 : left != -1;
        if (split) {
            if (left != i + 1 || right <= left || right >= n || sp >= room)
                return 0;
            stack[sp].node = right;
            stack[sp].depth = ++depth;
            sp++;
            int64_t f;
            memcpy(&f, rec + feature_off, 8);
            min_feature = f < min_feature ? f : min_feature;
            max_feature = f > max_feature ? f : max_feature;
            n_split++;
            if (cat_off >= 0 && rec[cat_off] != 0) {
                uint32_t row;
                memcpy(&row, rec + bitset_off, 4);
                n_cat++;
                max_bitset = (int64_t)row > max_bitset ? (int64_t)row : max_bitset;
            }
        }
        else {
            if (leaf_off < 0 && right != -1)
                return 0;
            deepest = depth > deepest ? depth : deepest;
            if (sp == 0) {
                if (i != n - 1)
                    return 0;
                break;
            }
            sp--;
            if (stack[sp].node != i + 1)
                return 0;
            depth = stack[sp].depth;
        }
    }
    if (sp != 0)
        return 0;
    summarize(s, deepest, min_feature, max_feature, max_bitset, n_cat, n_split);
    return 1;
}

#define SMALL_TREE 255 /* nodes: a boosting predictor has at most 2 * max_leaf_nodes - 1 */
#define PREORDER_DEPTH 256 /* pending right children walk_preorder holds (4 kB of stack) */

/* The pass over `len` bytes of node records laid out as `layout` (itemsize, left_off,
 * right_off, link_bytes, leaf_off, feature_off, cat_off, bitset_off); see tree_nodes. Returns
 * 0 with `s` filled, or -1 with a ValueError set (a malformed layout, an array that is not
 * whole records, a bad tree: s->fail) or a MemoryError. */
static int
summarize_nodes(const char *base, Py_ssize_t len, const Py_ssize_t layout[8], TreeSummary *s)
{
    Py_ssize_t itemsize = layout[0], left_off = layout[1], right_off = layout[2],
               link_bytes = layout[3], leaf_off = layout[4], feature_off = layout[5],
               cat_off = layout[6], bitset_off = layout[7];
    if (itemsize <= 0 || len % itemsize != 0 || len == 0) {
        PyErr_SetString(PyExc_ValueError, "the node array is empty or not whole records");
        return -1;
    }
    if ((link_bytes != 4 && link_bytes != 8) || left_off < 0 ||
        left_off + link_bytes > itemsize || right_off < 0 || right_off + link_bytes > itemsize ||
        feature_off < 0 || feature_off + 8 > itemsize || leaf_off >= itemsize ||
        cat_off >= itemsize || (cat_off >= 0 && (bitset_off < 0 || bitset_off + 4 > itemsize))) {
        PyErr_SetString(PyExc_ValueError, "tree_nodes: field offsets outside the record");
        return -1;
    }
    Py_ssize_t n = len / itemsize;
    *s = (TreeSummary){0, 0, -1, -1, 0, 0, NULL};
    {
        Pending stack[PREORDER_DEPTH];
        int done;
#define PREORDER(WIDTH, LEAF)                                                                 \
    walk_preorder(s, base, n, itemsize, left_off, right_off, WIDTH, LEAF, feature_off,       \
                  cat_off, bitset_off, stack, PREORDER_DEPTH)
        if (link_bytes == 8 && leaf_off < 0)
            done = PREORDER(8, -1); /* scikit-learn's Tree */
        else if (link_bytes == 4 && leaf_off >= 0)
            done = PREORDER(4, leaf_off); /* a boosting predictor */
        else
            done = PREORDER(link_bytes, leaf_off);
#undef PREORDER
        if (done)
            return 0;
    }
    /* slot n is the sink for leaves' links; a small tree's scratch is on the stack */
    int32_t depth_small[SMALL_TREE + 1];
    uint8_t parents_small[SMALL_TREE + 1];
    int32_t *depth = NULL;
    uint8_t *parents = NULL;
    if (n <= SMALL_TREE) {
        memset(depth_small, 0, sizeof(int32_t) * ((size_t)n + 1));
        memset(parents_small, 0, (size_t)n + 1);
    }
    else {
        depth = PyMem_Calloc((size_t)n + 1, sizeof(int32_t));
        parents = PyMem_Calloc((size_t)n + 1, 1);
        if (!depth || !parents) {
            PyMem_Free(depth);
            PyMem_Free(parents);
            PyErr_NoMemory();
            return -1;
        }
    }
    *s = (TreeSummary){0, 0, -1, -1, 0, 0, NULL};
#define WALK(WIDTH, LEAF)                                                                     \
    walk_nodes(s, base, n, itemsize, left_off, right_off, WIDTH, LEAF, feature_off, cat_off,  \
               bitset_off, parents ? parents : parents_small, depth ? depth : depth_small)
    if (link_bytes == 8 && leaf_off < 0)
        WALK(8, -1); /* scikit-learn's Tree */
    else if (link_bytes == 4 && leaf_off >= 0)
        WALK(4, leaf_off); /* a boosting predictor */
    else
        WALK(link_bytes, leaf_off);
#undef WALK
    PyMem_Free(depth);
    PyMem_Free(parents);
    if (s->fail) {
        PyErr_SetString(PyExc_ValueError, s->fail);
        return -1;
    }
    return 0;
}

static PyObject *
tree_nodes(PyObject *self, PyObject *const *args, Py_ssize_t nargs)
{
    /* METH_FASTCALL with the numbers read one by one: a boosting model calls this for each of
     * its thousands of small predictors, and PyArg_ParseTuple cost as much as the pass */
    if (nargs != 9) {
        PyErr_SetString(PyExc_TypeError, "tree_nodes takes 9 arguments");
        return NULL;
    }
    Py_ssize_t layout[8];
    for (int k = 0; k < 8; k++) {
        layout[k] = PyLong_AsSsize_t(args[k + 1]);
        if (layout[k] == -1 && PyErr_Occurred())
            return NULL;
    }
    Py_buffer b;
    if (PyObject_GetBuffer(args[0], &b, PyBUF_SIMPLE) < 0)
        return NULL;
    TreeSummary s;
    PyObject *result = NULL;
    if (summarize_nodes((const char *)b.buf, b.len, layout, &s) == 0)
        result = Py_BuildValue("(iLLnL)", s.deepest, (long long)s.min_feature,
                               (long long)s.max_feature, s.n_cat, (long long)s.max_bitset);
    PyBuffer_Release(&b);
    return result;
}

/* predictor_check(spec, predictor): validate_tree_predictor (_validators.py) for the plain
 * case, without its Python frames: a boosting model holds thousands of predictors, and the
 * checks took 3 microseconds each in Python, a third of what unpickling one costs.
 *
 * spec is (fallback, cls, ndarray, uint32 dtype, record dtype, same_as_record, record, kind,
 * *layout): the Python hook, TreePredictor, numpy.ndarray, numpy.dtype(uint32), the node
 * record dtype, _validators._SAME_AS_RECORD, _validators._PREDICTORS and the layout of
 * tree_nodes. This only accepts: a predictor that is anything but the plain case (another
 * type, arrays of another layout or dtype object, a tree that fails a check) goes to
 * `fallback`, which checks it again and says what is wrong. On acceptance it records the
 * predictor as the fallback would: its node array appended to record.nodes, the highest
 * split feature and the count of categorical splits folded into record.max_feature and
 * record.categorical. Returns the predictor. */
enum { PC_FALLBACK, PC_CLS, PC_NDARRAY, PC_U32, PC_DTYPE, PC_SAME, PC_RECORD, PC_KIND,
       PC_LAYOUT, PC_SIZE = PC_LAYOUT + 8 };

static PyObject *str_nodes, *str_binned, *str_raw, *str_dtype, *str_ndim, *str_shape,
    *str_strides, *str_max_feature, *str_categorical;

static int
predictor_strings(void)
{
    if (str_categorical)
        return 0;
    if (!(str_nodes = PyUnicode_InternFromString("nodes")) ||
        !(str_binned = PyUnicode_InternFromString("binned_left_cat_bitsets")) ||
        !(str_raw = PyUnicode_InternFromString("raw_left_cat_bitsets")) ||
        !(str_dtype = PyUnicode_InternFromString("dtype")) ||
        !(str_ndim || (str_ndim = PyUnicode_InternFromString("ndim"))) ||
        !(str_shape = PyUnicode_InternFromString("shape")) ||
        !(str_strides = PyUnicode_InternFromString("strides")) ||
        !(str_max_feature = PyUnicode_InternFromString("max_feature")) ||
        !(str_categorical = PyUnicode_InternFromString("categorical")))
        return -1;
    return 0;
}

/* The last dtype object `same` vouched for (held, so that no other object can take its
 * address): the predictors of one load share one unpickled node dtype, and a dtype cannot
 * change once built. */
static PyObject *vouched_dtype;

/* Whether `a` is an ndarray whose dtype object is `dtype` or, with `same` (a dict), one that
 * `same` maps (id(dtype), kind) to; -1 with an error set only for a failure of memory. */
static int
has_dtype(PyObject *a, PyObject *ndarray, PyObject *dtype, PyObject *same, PyObject *kind)
{
    if (!PyObject_TypeCheck(a, (PyTypeObject *)ndarray))
        return 0;
    PyObject *d = PyObject_GetAttr(a, str_dtype);
    if (!d) {
        PyErr_Clear();
        return 0;
    }
    int ok = d == dtype || (same && d == vouched_dtype);
    if (!ok && same) {
        PyObject *id = PyLong_FromVoidPtr(d);
        PyObject *key = id ? PyTuple_Pack(2, id, kind) : NULL;
        Py_XDECREF(id);
        if (!key) {
            Py_DECREF(d);
            return -1;
        }
        ok = PyDict_GetItemWithError(same, key) == d;
        Py_DECREF(key);
        if (PyErr_Occurred()) {
            Py_DECREF(d);
            return -1;
        }
        if (ok)
            Py_XSETREF(vouched_dtype, Py_NewRef(d));
    }
    else if (!ok)
        ok = PyObject_RichCompareBool(d, dtype, Py_EQ) == 1;
    Py_DECREF(d);
    PyErr_Clear();
    return ok;
}

/* The rows of a bitset array: an ndarray of uint32 of shape (rows, 8) in C order (numpy's
 * rule: strides (32, 4), where the first does not count for one row and neither for none);
 * -1 if not. Read from its attributes: a buffer export would leave numpy's description of
 * the buffer cached with the array, memory that pickle's load never takes. */
static Py_ssize_t
bitset_rows(PyObject *b, PyObject *const *spec)
{
    if (!b || has_dtype(b, spec[PC_NDARRAY], spec[PC_U32], NULL, NULL) != 1)
        return -1;
    PyObject *shape = PyObject_GetAttr(b, str_shape);
    PyObject *strides = shape ? PyObject_GetAttr(b, str_strides) : NULL;
    Py_ssize_t rows = -1;
    if (strides && PyTuple_CheckExact(shape) && PyTuple_GET_SIZE(shape) == 2 &&
        PyTuple_CheckExact(strides) && PyTuple_GET_SIZE(strides) == 2 &&
        PyLong_AsSsize_t(PyTuple_GET_ITEM(shape, 1)) == 8) {
        Py_ssize_t n = PyLong_AsSsize_t(PyTuple_GET_ITEM(shape, 0));
        if (n == 0 || (PyLong_AsSsize_t(PyTuple_GET_ITEM(strides, 1)) == 4 &&
                       (n == 1 || PyLong_AsSsize_t(PyTuple_GET_ITEM(strides, 0)) == 32)))
            rows = n;
    }
    Py_XDECREF(shape);
    Py_XDECREF(strides);
    PyErr_Clear();
    return rows;
}

/* Add `n` to the int attribute `name` of `record`, or raise it to `n` (max). */
static int
fold(PyObject *record, PyObject *name, long long n, int max)
{
    PyObject *old = PyObject_GetAttr(record, name);
    if (!old)
        return -1;
    long long had = PyLong_AsLongLong(old);
    Py_DECREF(old);
    if (had == -1 && PyErr_Occurred())
        return -1;
    if (max ? n <= had : n == 0)
        return 0;
    PyObject *now = PyLong_FromLongLong(max ? n : had + n);
    if (!now)
        return -1;
    int rc = PyObject_SetAttr(record, name, now);
    Py_DECREF(now);
    return rc;
}

static PyObject *
predictor_check(PyObject *self, PyObject *const *args, Py_ssize_t nargs)
{
    if (nargs != 2 || !PyTuple_CheckExact(args[0]) || PyTuple_GET_SIZE(args[0]) != PC_SIZE) {
        PyErr_SetString(PyExc_TypeError, "predictor_check(spec, predictor)");
        return NULL;
    }
    PyObject *const *spec = &PyTuple_GET_ITEM(args[0], 0);
    PyObject *obj = args[1];
    PyObject *nodes = NULL, *binned = NULL, *raw = NULL, *list = NULL;
    if (predictor_strings() < 0)
        return NULL;
    if ((PyObject *)Py_TYPE(obj) != spec[PC_CLS])
        goto fallback;
    nodes = PyObject_GetAttr(obj, str_nodes);
    binned = nodes ? PyObject_GetAttr(obj, str_binned) : NULL;
    raw = binned ? PyObject_GetAttr(obj, str_raw) : NULL;
    if (!raw) {
        PyErr_Clear();
        goto fallback;
    }
    Py_ssize_t binned_rows = bitset_rows(binned, spec), raw_rows = bitset_rows(raw, spec);
    if (binned_rows < 0 || raw_rows < 0)
        goto fallback;
    int typed = has_dtype(nodes, spec[PC_NDARRAY], spec[PC_DTYPE], spec[PC_SAME], spec[PC_KIND]);
    if (typed < 0)
        goto error;
    if (!typed)
        goto fallback;
    Py_ssize_t layout[8];
    for (int k = 0; k < 8; k++) {
        layout[k] = PyLong_AsSsize_t(spec[PC_LAYOUT + k]);
        if (layout[k] == -1 && PyErr_Occurred())
            goto error;
    }
    /* one dimension (its attribute), in C order (what a plain buffer export requires, the
     * export the Python check makes too), whole records (summarize_nodes) */
    PyObject *ndim = PyObject_GetAttr(nodes, str_ndim);
    int flat = ndim && PyLong_CheckExact(ndim) && PyLong_AsLong(ndim) == 1;
    Py_XDECREF(ndim);
    Py_buffer v;
    if (!flat || PyObject_GetBuffer(nodes, &v, PyBUF_SIMPLE) < 0) {
        PyErr_Clear();
        goto fallback;
    }
    TreeSummary s;
    int walked = summarize_nodes((const char *)v.buf, v.len, layout, &s);
    PyBuffer_Release(&v);
    if (walked < 0) {
        if (PyErr_ExceptionMatches(PyExc_MemoryError))
            goto error;
        PyErr_Clear();
        goto fallback;
    }
    if (s.min_feature < 0 ||
        (s.n_cat && s.max_bitset >= (binned_rows < raw_rows ? binned_rows : raw_rows)))
        goto fallback; /* refused: the fallback says why */
    PyObject *record = spec[PC_RECORD];
    list = PyObject_GetAttr(record, str_nodes);
    if (!list)
        goto error;
    if (!PyList_Check(list)) {
        PyErr_SetString(PyExc_TypeError, "predictor_check: record.nodes is not a list");
        goto error;
    }
    if (PyList_Append(list, nodes) < 0 || fold(record, str_max_feature, s.max_feature, 1) < 0 ||
        fold(record, str_categorical, (long long)s.n_cat, 0) < 0)
        goto error;
    Py_DECREF(list);
    Py_DECREF(nodes);
    Py_DECREF(binned);
    Py_DECREF(raw);
    return Py_NewRef(obj);
fallback:
    Py_XDECREF(nodes);
    Py_XDECREF(binned);
    Py_XDECREF(raw);
    return PyObject_CallOneArg(spec[PC_FALLBACK], obj);
error:
    Py_XDECREF(list);
    Py_XDECREF(nodes);
    Py_XDECREF(binned);
    Py_XDECREF(raw);
    return NULL;
}

/* ------------------------------------------------------------------ array reconstruction */
/* frombuffer(buf, dtype, shape, order): what numpy._core.numeric._frombuffer returns, the
 * call by which a protocol-5 pickle rebuilds every contiguous array, in-band or not:
 * numpy.frombuffer(buf, dtype).reshape(shape, order=order). Without the Python frame, and
 * for a one-dimensional array (the usual case) without the reshape, which gives back a
 * second array object viewing the first: together 0.6 of numpy's 0.86 microseconds, and a
 * boosting model rebuilds 4,500 arrays. Any other call (another arity, keywords, a shape
 * that is not the array's own) goes to numpy's function, which says what is wrong with it. */
static PyObject *np_frombuffer, *np_frombuffer_py, *str_reshape, *kw_order;

/* alias_dtype(unpickled, own): arrays that frombuffer builds with `unpickled` get `own`
 * instead, a dtype that pickles to the same state (the caller checks that). A library that
 * compares an array's dtype with its own record dtype (scikit-learn's tree and boosting
 * predictor do, for each tree) then finds the same object, which numpy answers at once,
 * where an equal copy costs a structured comparison (0.65 us, 1,500 times for a boosting
 * model). One pair is held, the last given. */
static PyObject *alias_from, *alias_to;

static PyObject *
alias_dtype(PyObject *self, PyObject *const *args, Py_ssize_t nargs)
{
    if (nargs != 2) {
        PyErr_SetString(PyExc_TypeError, "alias_dtype(unpickled, own)");
        return NULL;
    }
    Py_XSETREF(alias_from, Py_NewRef(args[0]));
    Py_XSETREF(alias_to, Py_NewRef(args[1]));
    Py_RETURN_NONE;
}

static int
numpy_frombuffer_loaded(void)
{
    if (np_frombuffer_py)
        return 0;
    PyObject *numeric = PyImport_ImportModule("numpy._core.numeric");
    if (!numeric) { /* numpy 1.x */
        PyErr_Clear();
        numeric = PyImport_ImportModule("numpy.core.numeric");
        if (!numeric)
            return -1;
    }
    PyObject *fast = PyObject_GetAttrString(numeric, "frombuffer");
    PyObject *slow = fast ? PyObject_GetAttrString(numeric, "_frombuffer") : NULL;
    Py_DECREF(numeric);
    if (!slow) {
        Py_XDECREF(fast);
        return -1;
    }
    if (!str_ndim && !(str_ndim = PyUnicode_InternFromString("ndim")))
        goto fail;
    if (!str_reshape && !(str_reshape = PyUnicode_InternFromString("reshape")))
        goto fail;
    if (!kw_order && !(kw_order = Py_BuildValue("(s)", "order")))
        goto fail;
    np_frombuffer = fast;
    np_frombuffer_py = slow;
    return 0;
fail:
    Py_DECREF(fast);
    Py_DECREF(slow);
    return -1;
}

/* Whether `array` (1-d, from numpy.frombuffer) already has `shape` in `order`: a 1-tuple of
 * its length, in C or Fortran order (the same thing in one dimension). */
static int
already_shaped(PyObject *array, PyObject *shape, PyObject *order)
{
    if (!PyTuple_CheckExact(shape) || PyTuple_GET_SIZE(shape) != 1 ||
        !PyLong_CheckExact(PyTuple_GET_ITEM(shape, 0)) || !PyUnicode_Check(order) ||
        (PyUnicode_CompareWithASCIIString(order, "C") != 0 &&
         PyUnicode_CompareWithASCIIString(order, "F") != 0))
        return 0;
    Py_ssize_t want = PyLong_AsSsize_t(PyTuple_GET_ITEM(shape, 0));
    PyObject *ndim = PyObject_GetAttr(array, str_ndim);
    Py_ssize_t have = PyObject_Size(array);
    /* a sub-array dtype makes frombuffer's result more than one-dimensional */
    int ok = ndim && PyLong_CheckExact(ndim) && PyLong_AsLong(ndim) == 1 && have == want &&
             want >= 0;
    Py_XDECREF(ndim);
    PyErr_Clear(); /* whatever failed above, numpy's reshape says it */
    return ok;
}

/* ------------------------------------------------------------------ one array per buffer */
/* An array made in place views its bytes: numpy.frombuffer's, and ndarray.__setstate__'s of
 * more than 1,000 bytes, which keeps the bytes object and writes through it. Honest pickles
 * give each array bytes of their own; a crafted stream can give one buffer to two arrays (the
 * memo read twice, or an argument tuple reused), of different dtypes, so that a write through
 * one (partial_fit updating a coefficient array) rewrites the other after the loader checked
 * it (a neighbours tree's indices, a sparse matrix's). So:
 *   - a bytearray already exported (to a live array) is not viewed again;
 *   - a memoryview (an out-of-band buffer) is released once an array views it, so that a
 *     second use fails (the scan refuses a memo copy of one, which would escape this);
 *   - a bytes object of more than SET_IN_PLACE bytes is claimed, per thread, by the load whose
 *     array views it (claim_bytes, which the array-state check calls too); a second claim is
 *     refused. The claims hold the objects, so that an id stays theirs, until release_claims
 *     (at the load's end). */
static PyObject *claims_key;

/* ndarray.__setstate__ copies data of up to this many bytes and keeps larger ones in place
 * (writable): only those can make an array that writes where another array reads. Smaller
 * bytes objects under frombuffer's read-only arrays are not claimed (CPython shares the empty
 * and one-byte ones: two honest read-only empty arrays get the same object). */
#define SET_IN_PLACE 1000

/* this thread's claims: a dict of id -> object (borrowed), or NULL with an exception set */
static PyObject *
thread_claims(void)
{
    if (!claims_key && !(claims_key = PyUnicode_InternFromString("amber.claimed_bytes")))
        return NULL;
    PyObject *d = PyThreadState_GetDict();
    if (!d) {
        PyErr_SetString(PyExc_RuntimeError, "no thread state to record claims in");
        return NULL;
    }
    PyObject *claims = PyDict_GetItemWithError(d, claims_key);
    if (claims || PyErr_Occurred())
        return claims;
    claims = PyDict_New();
    if (!claims || PyDict_SetItem(d, claims_key, claims) < 0) {
        Py_XDECREF(claims);
        return NULL;
    }
    Py_DECREF(claims); /* the thread's dict holds it */
    return claims;
}

/* 1: bytes object `obj` claimed now (or too small to need it); 0: it already was; -1: error */
static int
claim(PyObject *obj)
{
    if (PyBytes_Check(obj) && PyBytes_GET_SIZE(obj) <= SET_IN_PLACE)
        return 1;
    PyObject *claims = thread_claims();
    if (!claims)
        return -1;
    PyObject *key = PyLong_FromVoidPtr(obj);
    if (!key)
        return -1;
    int had = PyDict_Contains(claims, key);
    int r = had < 0 ? -1 : had ? 0 : PyDict_SetItem(claims, key, obj) < 0 ? -1 : 1;
    Py_DECREF(key);
    return r;
}

static PyObject *
claim_bytes(PyObject *self, PyObject *obj)
{
    int r = claim(obj);
    return r < 0 ? NULL : PyBool_FromLong(r);
}

static PyObject *
release_claims(PyObject *self, PyObject *unused)
{
    PyObject *claims = thread_claims();
    if (!claims)
        return NULL;
    PyDict_Clear(claims);
    Py_RETURN_NONE;
}

static const char already_viewed[] =
    "its bytes are already the data of another array (a crafted stream gives one buffer to "
    "two arrays, so that writing to one rewrites the other)";

/* Before an array is made on `buf`: 0, or -1 with ValueError when another array views it. */
static int
first_view(PyObject *buf)
{
    int fresh = 1;
    if (PyByteArray_Check(buf))
        fresh = ((PyByteArrayObject *)buf)->ob_exports == 0;
    else if (PyBytes_Check(buf) && (fresh = claim(buf)) < 0)
        return -1;
    if (!fresh) {
        PyErr_SetString(PyExc_ValueError, already_viewed);
        return -1;
    }
    return 0;
}

/* Whether `array`'s chain of bases reaches `buf`: then the array holds no view of its own
 * and `buf` is what keeps its memory. */
static int
based_on(PyObject *array, PyObject *buf)
{
    PyObject *o = Py_NewRef(array);
    for (int depth = 0; depth < 16 && o != buf; depth++) {
        PyObject *base = PyObject_GetAttrString(o, "base"); /* a memoryview has none */
        if (!base && !PyErr_ExceptionMatches(PyExc_AttributeError)) {
            Py_DECREF(o);
            return -1;
        }
        PyErr_Clear();
        if (!base || base == Py_None) {
            Py_XDECREF(base);
            break;
        }
        Py_SETREF(o, base);
    }
    int found = o == buf;
    Py_DECREF(o);
    return found;
}

/* After an array was made on `buf`: a memoryview is released when the array holds a view of
 * its own (numpy's frombuffer takes one). Returns `array`, or NULL (and drops it) on error. */
static PyObject *
viewed(PyObject *buf, PyObject *array)
{
    if (!array || !PyMemoryView_Check(buf))
        return array;
    int held = based_on(array, buf);
    if (held < 0)
        Py_CLEAR(array);
    if (array && !held) {
        PyObject *r = PyObject_CallMethod(buf, "release", NULL);
        if (!r)
            Py_CLEAR(array);
        Py_XDECREF(r);
    }
    return array;
}

static PyObject *
frombuffer(PyObject *self, PyObject *const *args, size_t nargsf, PyObject *kwnames)
{
    if (numpy_frombuffer_loaded() < 0)
        return NULL;
    Py_ssize_t nargs = PyVectorcall_NARGS(nargsf);
    if (nargs >= 1 && first_view(args[0]) < 0)
        return NULL;
    if (nargs != 4 || kwnames)
        return viewed(args[0], PyObject_Vectorcall(np_frombuffer_py, args, nargsf, kwnames));
    PyObject *call[2] = {args[0], args[1] == alias_from ? alias_to : args[1]};
    PyObject *array = PyObject_Vectorcall(np_frombuffer, call, 2, NULL);
    if (!array || already_shaped(array, args[2], args[3]))
        return viewed(args[0], array);
    PyObject *reshape[3] = {array, args[2], args[3]};
    PyObject *result = PyObject_VectorcallMethod(str_reshape, reshape, 2, kw_order);
    Py_DECREF(array);
    return viewed(args[0], result);
}

/* ------------------------------------------------------------------ hook splicing */
typedef struct {
    Py_ssize_t at;    /* offset in the original stream */
    int order;        /* at one offset: a forgotten store's POP (-1), closings (0), openings (1),
                         a frame header (2), a forgotten store's NONE (3) */
    Py_ssize_t tie;   /* closings: inner first (-start); openings: outer first (-end) */
    Py_ssize_t num;   /* openings: the validator's number; frames: the new frame length */
} Cut;

static int
cmp_cut(const void *a, const void *b)
{
    const Cut *x = a, *y = b;
    if (x->at != y->at)
        return x->at < y->at ? -1 : 1;
    if (x->order != y->order)
        return x->order < y->order ? -1 : 1;
    if (x->tie != y->tie)
        return x->tie < y->tie ? -1 : 1;
    return 0;
}

static Py_ssize_t
cut_len(const Cut *c, Py_ssize_t module_len)
{
    if (c->order == -1 || c->order == 3)
        return 1; /* POP, NONE */
    if (c->order == 0)
        return 2; /* TUPLE1 REDUCE */
    if (c->order == 1) {
        char digits[24];
        return 1 + module_len + 1 + snprintf(digits, sizeof digits, "%zd", c->num) + 1;
    }
    return 0; /* a frame header is rewritten in place */
}

/* The bytes a cut inserts (a frame header: its 9 rewritten bytes), written at `out`. */
static Py_ssize_t
emit_cut(const Cut *c, char *out, const Py_buffer *mod)
{
    Py_ssize_t o = 0;
    if (c->order == -1) {
        out[o++] = '0';
    } else if (c->order == 3) {
        out[o++] = 'N';
    } else if (c->order == 0) {
        out[o++] = (char)0x85;
        out[o++] = 'R';
    } else if (c->order == 1) {
        out[o++] = 'c';
        memcpy(out + o, mod->buf, (size_t)mod->len);
        o += mod->len;
        out[o++] = '\n';
        o += sprintf(out + o, "%zd", c->num);
        out[o++] = '\n';
    } else {
        uint64_t v = (uint64_t)c->num;
        out[o++] = (char)0x95;
        for (int b = 0; b < 8; b++)
            out[o++] = (char)((v >> (8 * b)) & 0xFF);
    }
    return o;
}

/* Sort cuts[0..n) given that cuts[0..mid) is sorted and so, as a rule, is cuts[mid..n) (memo
 * stores and frame headers come in stream order): a merge, not a sort of all the cuts again (a
 * boosting model has some 37,000 of them; sorting took longer than the splicing). Returns 0
 * when out of memory. */
static int
merge_tail(Cut *cuts, Py_ssize_t mid, Py_ssize_t n)
{
    for (Py_ssize_t k = mid + 1; k < n; k++) {
        if (cmp_cut(&cuts[k - 1], &cuts[k]) > 0) {
            qsort(cuts, (size_t)n, sizeof(Cut), cmp_cut);
            return 1;
        }
    }
    Py_ssize_t ntail = n - mid;
    Cut *tail = PyMem_Malloc((size_t)ntail * sizeof(Cut));
    if (!tail)
        return 0;
    memcpy(tail, cuts + mid, (size_t)ntail * sizeof(Cut));
    Py_ssize_t a = mid - 1, b = ntail - 1;
    for (Py_ssize_t w = n - 1; b >= 0; w--) {
        if (a >= 0 && cmp_cut(&cuts[a], &tail[b]) > 0)
            cuts[w] = cuts[a--];
        else
            cuts[w] = tail[b--];
    }
    PyMem_Free(tail);
    return 1;
}

/* splice_hooks(data, sites, numbers, frames, module, forget=b"", room=None) -> bytes: the
 * stream with a push of validator `numbers[k]` (GLOBAL module\nnumber\n) at each site's start
 * and TUPLE1 REDUCE at its end, and every FRAME that encloses inserted bytes grown to match. `sites` are
 * the scanner's (start, end, global, kind) tuples, `frames` its FRAME offsets.
 *
 * `forget` holds the scanner's (offset, end) int64 pairs, in stream order, of memo stores
 * that nothing reads back: each becomes NONE <store> POP, so the memo keeps None instead of
 * the object (same indices, same stack) and what only the memo held is freed as soon as its
 * consumer is done with it (a decision tree copies its node array; a REDUCE is done with its
 * argument tuple) instead of when the whole load ends.
 *
 * With `room` (a writable buffer that starts with `data` itself and has spare bytes after it)
 * the result is written over `data` in place, from the end backwards, and its length is
 * returned; None when the room is too small (the caller then splices into a new buffer). */
static PyObject *
splice_hooks(PyObject *self, PyObject *args)
{
    Py_buffer view, mod, fg = {0}, room = {0};
    PyObject *sites_in, *numbers_in, *frames_in;
    if (!PyArg_ParseTuple(args, "y*OOOy*|y*w*", &view, &sites_in, &numbers_in, &frames_in, &mod,
                          &fg, &room))
        return NULL;
    PyObject *result = NULL;
    PyObject *sites = NULL, *numbers = NULL, *frames = NULL;
    Cut *cuts = NULL;
    Py_ssize_t *prefix = NULL, *plan = NULL;
    const unsigned char *data = view.buf;
    if (!(sites = PySequence_Fast(sites_in, "splice_hooks: sites must be a sequence")) ||
        !(numbers = PySequence_Fast(numbers_in, "splice_hooks: numbers must be a sequence")) ||
        !(frames = PySequence_Fast(frames_in, "splice_hooks: frames must be a sequence")))
        goto done;
    Py_ssize_t len = view.len, nsites = PySequence_Fast_GET_SIZE(sites),
               nframes = PySequence_Fast_GET_SIZE(frames);
    if (PySequence_Fast_GET_SIZE(numbers) != nsites) {
        PyErr_SetString(PyExc_ValueError, "splice_hooks: one number per site");
        goto done;
    }
    if (fg.len % 16) {
        PyErr_SetString(PyExc_ValueError, "splice_hooks: forget is not (offset, end) pairs");
        goto done;
    }
    Py_ssize_t nforget = fg.len / 16;
    Py_ssize_t ncuts = 2 * nsites + 2 * nforget;
    cuts = PyMem_Malloc((size_t)(ncuts + nframes + 1) * sizeof(Cut));
    prefix = PyMem_Malloc((size_t)(ncuts + 1) * sizeof(Py_ssize_t));
    if (!cuts || !prefix) {
        PyErr_NoMemory();
        goto done;
    }
    for (Py_ssize_t k = 0; k < nsites; k++) {
        PyObject *site = PySequence_Fast_GET_ITEM(sites, k);
        Py_ssize_t start, end, num;
        if (!PyTuple_Check(site) || PyTuple_GET_SIZE(site) < 2) {
            PyErr_SetString(PyExc_ValueError, "splice_hooks: a site is not a tuple");
            goto done;
        }
        start = PyLong_AsSsize_t(PyTuple_GET_ITEM(site, 0));
        end = PyLong_AsSsize_t(PyTuple_GET_ITEM(site, 1));
        num = PyLong_AsSsize_t(PySequence_Fast_GET_ITEM(numbers, k));
        if (PyErr_Occurred())
            goto done;
        if (start < 0 || end < start || end > len || num < 0) {
            PyErr_SetString(PyExc_ValueError, "splice_hooks: a site lies outside the stream");
            goto done;
        }
        cuts[2 * k] = (Cut){start, 1, -end, num};
        cuts[2 * k + 1] = (Cut){end, 0, -start, 0};
    }
    /* the hooks' cuts are sorted; the stores' come sorted (in stream order, each store's
     * bytes before the next's), so the two lists are merged rather than sorted together: a
     * boosting model forgets some 17,000 stores */
    qsort(cuts, (size_t)(2 * nsites), sizeof(Cut), cmp_cut);
    const unsigned char *fp = fg.buf;
    Py_ssize_t last = 0;
    for (Py_ssize_t k = 0; k < nforget; k++) {
        uint64_t pair[2] = {0, 0};
        for (int h = 0; h < 2; h++)
            for (int b = 7; b >= 0; b--)
                pair[h] = (pair[h] << 8) | fp[16 * k + 8 * h + b];
        if (pair[0] >= pair[1] || pair[1] > (uint64_t)len || (Py_ssize_t)pair[0] < last) {
            PyErr_SetString(PyExc_ValueError,
                            "splice_hooks: a store lies outside the stream or out of order");
            goto done;
        }
        last = (Py_ssize_t)pair[1];
        cuts[2 * nsites + 2 * k] = (Cut){(Py_ssize_t)pair[0], 3, 0, 0};
        cuts[2 * nsites + 2 * k + 1] = (Cut){(Py_ssize_t)pair[1], -1, 0, 0};
    }
    if (nforget && !merge_tail(cuts, 2 * nsites, ncuts)) {
        PyErr_NoMemory();
        goto done;
    }
    prefix[0] = 0;
    for (Py_ssize_t k = 0; k < ncuts; k++)
        prefix[k + 1] = prefix[k] + cut_len(&cuts[k], mod.len);
    Py_ssize_t total = len + prefix[ncuts], n = ncuts;
    for (Py_ssize_t k = 0; k < nframes; k++) {
        Py_ssize_t f = PyLong_AsSsize_t(PySequence_Fast_GET_ITEM(frames, k));
        if (PyErr_Occurred())
            goto done;
        if (f < 0 || f + 9 > len || data[f] != 0x95) {
            PyErr_SetString(PyExc_ValueError, "splice_hooks: a frame offset is not a FRAME");
            goto done;
        }
        uint64_t flen = 0;
        for (int b = 7; b >= 0; b--)
            flen = (flen << 8) | data[f + 1 + b];
        Py_ssize_t first = f + 9;
        if (flen > (uint64_t)(len - first)) {
            PyErr_SetString(PyExc_ValueError, "splice_hooks: a frame runs past the stream");
            goto done;
        }
        Py_ssize_t last = first + (Py_ssize_t)flen;
        /* cuts with first <= at < last */
        Py_ssize_t lo = 0, hi = ncuts;
        while (lo < hi) {
            Py_ssize_t mid = (lo + hi) / 2;
            if (cuts[mid].at < first) lo = mid + 1; else hi = mid;
        }
        Py_ssize_t a = lo;
        lo = a, hi = ncuts;
        while (lo < hi) {
            Py_ssize_t mid = (lo + hi) / 2;
            if (cuts[mid].at < last) lo = mid + 1; else hi = mid;
        }
        Py_ssize_t extra = prefix[lo] - prefix[a];
        if (extra)
            cuts[n++] = (Cut){f, 2, 0, (Py_ssize_t)flen + extra};
    }
    if (n > ncuts && !merge_tail(cuts, ncuts, n)) {
        PyErr_NoMemory();
        goto done;
    }
    for (Py_ssize_t k = 0, pos = 0; k < n; k++) {
        if (cuts[k].at < pos) { /* a site inside a FRAME header: the scanner never reports one */
            PyErr_SetString(PyExc_ValueError, "splice_hooks: a site lies inside a frame header");
            goto done;
        }
        pos = cuts[k].at + (cuts[k].order == 2 ? 9 : 0);
    }
    if (room.obj) {
        if (room.buf != view.buf) {
            PyErr_SetString(PyExc_ValueError, "splice_hooks: room does not start with the data");
            goto done;
        }
        if (room.len < total) {
            result = Py_NewRef(Py_None);
            goto done;
        }
        /* forward: where each piece goes; backward: move it there. Every piece moves up (cuts
         * only insert), so a piece is written after everything above it has left. */
        plan = PyMem_Malloc((size_t)(3 * n + 1) * sizeof(Py_ssize_t));
        if (!plan) {
            PyErr_NoMemory();
            goto done;
        }
        Py_ssize_t pos = 0, o = 0;
        for (Py_ssize_t k = 0; k < n; k++) {
            const Cut *c = &cuts[k];
            plan[3 * k] = pos;                 /* the source of the piece before cut k */
            plan[3 * k + 1] = o;               /* where it goes */
            o += c->at - pos;
            plan[3 * k + 2] = o;               /* where the cut's bytes go */
            o += c->order == 2 ? 9 : cut_len(c, mod.len);
            pos = c->at + (c->order == 2 ? 9 : 0);
        }
        char *out = room.buf;
        if (o + (len - pos) != total) {
            PyErr_SetString(PyExc_SystemError, "splice_hooks: output size mismatch");
            goto done;
        }
        memmove(out + o, out + pos, (size_t)(len - pos));
        for (Py_ssize_t k = n - 1; k >= 0; k--) {
            emit_cut(&cuts[k], out + plan[3 * k + 2], &mod);
            memmove(out + plan[3 * k + 1], out + plan[3 * k], (size_t)(cuts[k].at - plan[3 * k]));
        }
        result = PyLong_FromSsize_t(total);
        goto done;
    }
    result = PyBytes_FromStringAndSize(NULL, total);
    if (!result)
        goto done;
    char *out = PyBytes_AS_STRING(result);
    Py_ssize_t pos = 0, o = 0;
    for (Py_ssize_t k = 0; k < n; k++) {
        const Cut *c = &cuts[k];
        memcpy(out + o, data + pos, (size_t)(c->at - pos));
        o += c->at - pos;
        pos = c->at;
        o += emit_cut(c, out + o, &mod);
        if (c->order == 2)
            pos += 9;
    }
    memcpy(out + o, data + pos, (size_t)(len - pos));
    o += len - pos;
    if (o != total) {
        Py_CLEAR(result);
        PyErr_SetString(PyExc_SystemError, "splice_hooks: output size mismatch");
    }
done:
    Py_XDECREF(sites);
    Py_XDECREF(numbers);
    Py_XDECREF(frames);
    PyMem_Free(cuts);
    PyMem_Free(prefix);
    PyMem_Free(plan);
    PyBuffer_Release(&view);
    PyBuffer_Release(&mod);
    if (fg.obj)
        PyBuffer_Release(&fg);
    if (room.obj)
        PyBuffer_Release(&room);
    return result;
}

/* ------------------------------------------------------------------ index maps */
/* index_map(d, n): check that every value of the dict `d` is an int in [0, n) (a vectorizer's
 * vocabulary_, whose values become the column indices of a sparse matrix that compiled code
 * then reads unchecked); raises ValueError naming the first bad kind of entry. One pass in C
 * that reads the values only (a key is never used as an index): a tf-idf vocabulary has
 * hundreds of thousands of terms. */
static PyObject *
index_map(PyObject *self, PyObject *const *args, Py_ssize_t nargs)
{
    if (nargs != 2 || !PyDict_Check(args[0])) {
        PyErr_SetString(PyExc_TypeError, "index_map(dict, n)");
        return NULL;
    }
    Py_ssize_t n = PyLong_AsSsize_t(args[1]);
    if (n == -1 && PyErr_Occurred())
        return NULL;
    PyObject *d = args[0], *key, *value;
    Py_ssize_t pos = 0;
    while (PyDict_Next(d, &pos, &key, &value)) {
        Py_ssize_t v;
        if (PyLong_CheckExact(value)) {
            v = PyLong_AsSsize_t(value);
            if (v == -1 && PyErr_Occurred()) {
                PyErr_Clear();
                v = -1;
            }
        }
        else if (PyLong_Check(value) || !PyIndex_Check(value)) {
            /* a bool or int subclass, a float, text: not what fitting writes */
            PyErr_Format(PyExc_ValueError, "a value is a %.80s, not an integer index",
                         Py_TYPE(value)->tp_name);
            return NULL;
        }
        else {
            /* a numpy integer scalar (allowlisted types only reach here) */
            PyObject *i = PyNumber_Index(value);
            if (i == NULL)
                return NULL;
            v = PyLong_AsSsize_t(i);
            Py_DECREF(i);
            if (v == -1 && PyErr_Occurred()) {
                PyErr_Clear();
                v = -1;
            }
        }
        if (v < 0 || v >= n) {
            PyErr_Format(PyExc_ValueError, "an index is outside 0..%zd", n - 1);
            return NULL;
        }
    }
    Py_RETURN_NONE;
}

static PyMethodDef methods[] = {
    {"splice_hooks", splice_hooks, METH_VARARGS,
     "splice_hooks(data, sites, numbers, frames, module, forget=b'', room=None)\n--\n\n"
     "Insert validator calls around hook sites, neutralise the memo stores in forget, and "
     "grow the frames that enclose them."},
    {"index_map", (PyCFunction)(void (*)(void))index_map, METH_FASTCALL,
     "index_map(d, n)\n--\n\n"
     "Check that every value of the dict d is an int in [0, n)."},
    {"tree_nodes", (PyCFunction)(void (*)(void))tree_nodes, METH_FASTCALL,
     "tree_nodes(nodes, itemsize, left_off, right_off, link_bytes, leaf_off, feature_off, "
     "cat_off, bitset_off)\n--\n\n"
     "Check the child links of a buffer of tree node records; return (depth, min split "
     "feature, max split feature, categorical splits, max bitset row)."},
    {"predictor_check", (PyCFunction)(void (*)(void))predictor_check, METH_FASTCALL,
     "predictor_check(spec, predictor)\n--\n\n"
     "Validate a boosting TreePredictor as _validators.validate_tree_predictor does, or hand "
     "it to spec[0] (the Python check) when it is not the plain case; return it."},
    {"alias_dtype", (PyCFunction)(void (*)(void))alias_dtype, METH_FASTCALL,
     "alias_dtype(unpickled, own)\n--\n\n"
     "Make frombuffer build arrays of dtype `unpickled` with `own` instead (a dtype that "
     "pickles to the same state)."},
    {"frombuffer", (PyCFunction)(void (*)(void))frombuffer, METH_FASTCALL | METH_KEYWORDS,
     "frombuffer(buf, dtype, shape, order)\n--\n\n"
     "numpy._core.numeric._frombuffer, without its Python frame: "
     "numpy.frombuffer(buf, dtype).reshape(shape, order=order)."},
    {"claim_bytes", claim_bytes, METH_O,
     "claim_bytes(data)\n--\n\n"
     "Record that an array of this thread's load views the bytes object `data` (one of more "
     "than 1,000 bytes: numpy copies smaller ones); False if one already does."},
    {"release_claims", release_claims, METH_NOARGS,
     "release_claims()\n--\n\n"
     "Forget (and let go of) the bytes objects this thread's load claimed."},
    {"scan", (PyCFunction)(void (*)(void))scan, METH_VARARGS | METH_KEYWORDS,
     "scan(data, n_buffers, max_memo, hooks=None, max_stack=16777216, max_marks=10000)\n"
     "--\n\n"
     "Vet a pickle stream without executing it. Returns (globals, declared_protocol, "
     "max_opcode_protocol, n_buffers_used, hook_sites, called, frames); raises "
     "ScanError(message, offset)."},
    {NULL, NULL, 0, NULL}};

static struct PyModuleDef moduledef = {
    PyModuleDef_HEAD_INIT, "amber.security._pickle_scan",
    "Vet pickle opcode streams without executing them.", -1, methods};

PyMODINIT_FUNC
PyInit__pickle_scan(void)
{
    init_proto_table();
    PyObject *m = PyModule_Create(&moduledef);
    if (!m)
        return NULL;
    ScanError = PyErr_NewExceptionWithDoc(
        "amber.security._pickle_scan.ScanError",
        "The pickle stream breaks a rule; args are (message, byte offset).",
        PyExc_ValueError, NULL);
    if (!ScanError) {
        Py_DECREF(m);
        return NULL;
    }
    if (PyModule_AddObjectRef(m, "ScanError", ScanError) < 0) {
        Py_CLEAR(ScanError);
        Py_DECREF(m);
        return NULL;
    }
    /* the refusal of a second array on one buffer, for the array-state check's message too */
    if (PyModule_AddStringConstant(m, "ALREADY_VIEWED", already_viewed) < 0) {
        Py_DECREF(m);
        return NULL;
    }
    return m;
}
