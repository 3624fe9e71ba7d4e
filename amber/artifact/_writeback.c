/* Start the write-back of a file range to its disk without waiting for it (Linux).
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

static PyMethodDef methods[] = {
    {"start", (PyCFunction)(void (*)(void))start, METH_FASTCALL,
     "start(fd, offset, nbytes)\n--\n\n"
     "Start writing the file range back to disk without waiting (Linux sync_file_range); "
     "returns whether the system accepted. Durability still needs fsync."},
    {NULL, NULL, 0, NULL}};

static struct PyModuleDef moduledef = {
    PyModuleDef_HEAD_INIT, "amber.artifact._writeback",
    "Start a file range's write-back early, so that a save's copy and its fsync overlap.", -1,
    methods};

PyMODINIT_FUNC
PyInit__writeback(void)
{
    return PyModule_Create(&moduledef);
}
