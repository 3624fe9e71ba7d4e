/* Artifact I/O helpers: start the write-back of a file range to its disk without waiting for it
 * (Linux), and allocate aligned, uninitialised byte buffers for reads.
 *
 * A durable save writes its bytes, then fsyncs: the disk sits idle while the bytes are copied
 * into the page cache, and the CPU sits idle while fsync waits for the disk. Starting the
 * write-back of each chunk as soon as it is written lets the two overlap; the fsync at the end
 * still waits for every byte, so durability is unchanged.
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h> /* defines _GNU_SOURCE on Linux, which sync_file_range needs */

#ifdef __linux__
#include <fcntl.h>
#endif

static PyObject *
start(PyObject *self, PyObject *const *args, Py_ssize_t nargs)
{
    if (nargs != 3) {
        PyErr_SetString(PyExc_TypeError, "start(fd, offset, nbytes) takes three integers");
        return NULL;
    }
    long fd = PyLong_AsLong(args[0]);
    long long offset = PyLong_AsLongLong(args[1]);
    long long nbytes = PyLong_AsLongLong(args[2]);
    if (PyErr_Occurred())
        return NULL;
    if (fd < 0 || fd > INT_MAX || offset < 0 || nbytes < 0) {
        PyErr_SetString(PyExc_ValueError, "start: fd, offset and nbytes must be >= 0");
        return NULL;
    }
#ifdef __linux__
    int rc;
    Py_BEGIN_ALLOW_THREADS
    rc = sync_file_range((int)fd, (off64_t)offset, (off64_t)nbytes, SYNC_FILE_RANGE_WRITE);
    Py_END_ALLOW_THREADS
    /* file systems that cannot (tmpfs, some network ones) say so; the fsync still follows */
    return PyBool_FromLong(rc == 0);
#else
    Py_RETURN_FALSE;
#endif
}

/* aligned(size, alignment) -> a writable memoryview of `size` uninitialised bytes whose start is
 * a multiple of `alignment` (a power of two), the slice of a bytearray.
 *
 * For small reads. Python's bytearray(n) zeroes its bytes (wasted work before a read that
 * overwrites them), and numpy's empty() keeps small allocations in a cache of its own whose
 * table, a static of numpy's, takes a page of memory the first time a size is used.
 */
static PyObject *
aligned(PyObject *self, PyObject *const *args, Py_ssize_t nargs)
{
    if (nargs != 2) {
        PyErr_SetString(PyExc_TypeError, "aligned(size, alignment) takes two integers");
        return NULL;
    }
    Py_ssize_t size = PyLong_AsSsize_t(args[0]);
    Py_ssize_t alignment = PyLong_AsSsize_t(args[1]);
    if (PyErr_Occurred())
        return NULL;
    if (size < 0 || alignment <= 0 || (alignment & (alignment - 1)) != 0 ||
        size > PY_SSIZE_T_MAX - alignment) {
        PyErr_Format(PyExc_ValueError,
                     "aligned: size must be >= 0 and alignment a power of two, not %zd and %zd",
                     size, alignment);
        return NULL;
    }
    /* contents left undefined: PyByteArray_FromStringAndSize copies nothing from NULL */
    PyObject *raw = PyByteArray_FromStringAndSize(NULL, size + alignment - 1);
    if (raw == NULL)
        return NULL;
    Py_ssize_t shift =
        (Py_ssize_t)((-(uintptr_t)PyByteArray_AS_STRING(raw)) & (uintptr_t)(alignment - 1));
    PyObject *whole = PyMemoryView_FromObject(raw);
    Py_DECREF(raw); /* the view holds it, and its export keeps it from being resized */
    if (whole == NULL)
        return NULL;
    PyObject *view = PySequence_GetSlice(whole, shift, shift + size);
    Py_DECREF(whole);
    return view;
}

static PyMethodDef methods[] = {
    {"start", (PyCFunction)(void (*)(void))start, METH_FASTCALL,
     "start(fd, offset, nbytes)\n--\n\n"
     "Start writing the file range back to disk without waiting (Linux sync_file_range); "
     "returns whether the system accepted. Durability still needs fsync."},
    {"aligned", (PyCFunction)(void (*)(void))aligned, METH_FASTCALL,
     "aligned(size, alignment)\n--\n\n"
     "A writable memoryview of size uninitialised bytes starting at a multiple of alignment "
     "(a power of two)."},
    {NULL, NULL, 0, NULL}};

static struct PyModuleDef moduledef = {
    PyModuleDef_HEAD_INIT, "amber.artifact._writeback",
    "Artifact I/O helpers: early write-back of a saved file range, aligned read buffers.", -1,
    methods};

PyMODINIT_FUNC
PyInit__writeback(void)
{
    return PyModule_Create(&moduledef);
}
