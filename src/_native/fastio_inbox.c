/* sslsock._fastio.Inbox and feed(): the messages of an engine's batch into the inboxes of
 * sslsock.aio's channels, in one C call per batch.
 *
 * Why it exists.  Under asyncio every message of a batch used to go through a few Python
 * steps before any task saw it (an event tuple, a dispatch loop, the channel's _feed):
 * about as much CPU per 64-byte message as the whole thread driver spends.  Here the batch
 * is walked in C: each message becomes bytes (Python's own: the hub's buffer is reused by
 * its next poll) and is appended to its channel's inbox, and the channels that a task waits
 * on (or that went over their read limit) are listed once each for Python, which then
 * resumes the tasks.
 *
 * Ownership.  Everything here runs with the GIL held, on the event loop's thread: the
 * inbox is the loop's.  The event array is the hub's (or the pump's, between its take and
 * its release) for the duration of the call; nothing of it is kept.
 *
 * Inbox is the C base of sslsock.aio.Channel: the messages not read yet (a list and the
 * index of the next one, made at the first message so that an idle channel holds none),
 * their size, the read limit, and the two futures a reader may wait on.
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <structmember.h>
#include <stdint.h>

#include "sslsock_core.h"
#include "fastio.h"

typedef struct {
    PyObject_HEAD
    PyObject *items;   /* list of bytes, unread from index head on; NULL when empty */
    Py_ssize_t head;
    Py_ssize_t unread; /* bytes in items[head:] */
    Py_ssize_t limit;  /* over this many unread bytes the engine should stop reading */
    PyObject *next;    /* future an `async for` waits on (result: the message), or None */
    PyObject *waiter;  /* future read() waits on ("look again"), or None */
    char paused;       /* the engine stopped reading the peer (set from Python) */
    char direct;       /* _feed is Inbox's own: feed() may append without calling it */
    char listed;       /* on the current batch's list of channels to look at */
} Inbox;

static PyObject *str_feed;  /* "_feed" */
static PyObject *str_callbacks, *str_remove_cb, *str_set_result, *str_done, *str_run;

/* A future slot is empty when None (or deleted: NULL). */
#define IS_SET(o) ((o) != NULL && (o) != Py_None)

static PyObject *Inbox_new(PyTypeObject *type, PyObject *args, PyObject *kwds)
{
    Inbox *self = (Inbox *)type->tp_alloc(type, 0);
    if (self == NULL)
        return NULL;
    Py_INCREF(Py_None);
    self->next = Py_None;
    Py_INCREF(Py_None);
    self->waiter = Py_None;
    self->limit = PY_SSIZE_T_MAX;
    self->direct = 1;
    return (PyObject *)self;
}

static int Inbox_traverse(Inbox *self, visitproc visit, void *arg)
{
    Py_VISIT(self->items);
    Py_VISIT(self->next);
    Py_VISIT(self->waiter);
    return 0;
}

static int Inbox_clear(Inbox *self)
{
    Py_CLEAR(self->items);
    Py_CLEAR(self->next);
    Py_CLEAR(self->waiter);
    return 0;
}

static void Inbox_dealloc(Inbox *self)
{
    PyObject_GC_UnTrack(self);
    Inbox_clear(self);
    Py_TYPE(self)->tp_free((PyObject *)self);
}

static Py_ssize_t inbox_count(Inbox *self)
{
    return self->items == NULL ? 0 : PyList_GET_SIZE(self->items) - self->head;
}

static int inbox_push(Inbox *self, PyObject *data)
{
    if (self->items == NULL) {
        self->items = PyList_New(0);
        if (self->items == NULL)
            return -1;
    }
    if (PyList_Append(self->items, data) < 0)
        return -1;
    self->unread += PyBytes_GET_SIZE(data);
    return 0;
}

/* _push(data): append one message (bytes).  Returns whether the unread bytes went over the
 * limit while the engine still reads the peer (the caller pauses it then). */
static PyObject *Inbox_push(Inbox *self, PyObject *data)
{
    if (!PyBytes_CheckExact(data)) {
        PyErr_SetString(PyExc_TypeError, "_push() takes bytes");
        return NULL;
    }
    if (inbox_push(self, data) < 0)
        return NULL;
    return PyBool_FromLong(self->unread > self->limit && !self->paused);
}

/* _take(): the next message; IndexError when there is none.  Once the unread bytes are
 * down to half the limit on a paused channel, self._pause(False) is called. */
static PyObject *Inbox_take(Inbox *self, PyObject *unused)
{
    if (inbox_count(self) == 0) {
        PyErr_SetString(PyExc_IndexError, "no message in the inbox");
        return NULL;
    }
    PyObject *data = PyList_GET_ITEM(self->items, self->head);
    PyList_SET_ITEM(self->items, self->head, NULL);
    self->head++;
    self->unread -= PyBytes_GET_SIZE(data);
    if (self->head == PyList_GET_SIZE(self->items)) {
        Py_CLEAR(self->items);  /* (the NULL slots before head are skipped by its dealloc) */
        self->head = 0;
    }
    if (self->paused && self->unread <= self->limit / 2) {
        PyObject *r = PyObject_CallMethod((PyObject *)self, "_pause", "O", Py_False);
        if (r == NULL) {
            Py_DECREF(data);
            return NULL;
        }
        Py_DECREF(r);
    }
    return data;
}

/* _unlist(): the channel was looked at; a later batch may list it again. */
static PyObject *Inbox_unlist(Inbox *self, PyObject *unused)
{
    self->listed = 0;
    Py_RETURN_NONE;
}

static PyObject *Inbox_get_count(Inbox *self, void *unused)
{
    return PyLong_FromSsize_t(inbox_count(self));
}

static PyMethodDef Inbox_methods[] = {
    {"_push", (PyCFunction)Inbox_push, METH_O, "append one message (bytes)"},
    {"_take", (PyCFunction)Inbox_take, METH_NOARGS, "the next message"},
    {"_unlist", (PyCFunction)Inbox_unlist, METH_NOARGS, "looked at: may be listed again"},
    {NULL},
};

static PyMemberDef Inbox_members[] = {
    {"_unread", T_PYSSIZET, offsetof(Inbox, unread), READONLY, "bytes not read yet"},
    {"_limit", T_PYSSIZET, offsetof(Inbox, limit), 0, "the read limit (bytes)"},
    {"_next", T_OBJECT, offsetof(Inbox, next), 0, "the future an async for waits on"},
    {"_waiter", T_OBJECT, offsetof(Inbox, waiter), 0, "the future read() waits on"},
    {"_paused", T_BOOL, offsetof(Inbox, paused), 0, "the engine stopped reading the peer"},
    {"_direct", T_BOOL, offsetof(Inbox, direct), 0, "feed() appends without calling _feed"},
    {NULL},
};

static PyGetSetDef Inbox_getset[] = {
    {"_count", (getter)Inbox_get_count, NULL, "messages not read yet", NULL},
    {NULL},
};

PyTypeObject ss_InboxType = {
    PyVarObject_HEAD_INIT(NULL, 0)
    .tp_name = "sslsock._fastio.Inbox",
    .tp_basicsize = sizeof(Inbox),
    .tp_flags = Py_TPFLAGS_DEFAULT | Py_TPFLAGS_BASETYPE | Py_TPFLAGS_HAVE_GC,
    .tp_doc = "The messages of one channel not read yet (the base of sslsock.aio.Channel).",
    .tp_new = Inbox_new,
    .tp_traverse = (traverseproc)Inbox_traverse,
    .tp_clear = (inquiry)Inbox_clear,
    .tp_dealloc = (destructor)Inbox_dealloc,
    .tp_methods = Inbox_methods,
    .tp_members = Inbox_members,
    .tp_getset = Inbox_getset,
};

/* One message event into its channel: appended to the inbox (or handed to an overriding
 * _feed), and the channel listed when Python has something to do for it. */
static int feed_one(const ss_event *e, PyObject *channels, PyObject *fed)
{
    PyObject *key = PyLong_FromUnsignedLongLong(e->id);
    if (key == NULL)
        return -1;
    PyObject *ch = PyDict_GetItemWithError(channels, key);  /* borrowed */
    Py_DECREF(key);
    if (ch == NULL)
        return PyErr_Occurred() ? -1 : 0;  /* closed or removed during the poll */
    if (!PyObject_TypeCheck(ch, &ss_InboxType)) {
        PyErr_SetString(PyExc_TypeError, "feed(): a channel that is not an Inbox");
        return -1;
    }
    PyObject *data = PyBytes_FromStringAndSize(e->len ? e->data : NULL, (Py_ssize_t)e->len);
    if (data == NULL)
        return -1;
    Inbox *in = (Inbox *)ch;
    int rc = 0;
    if (!in->direct) {
        PyObject *r = PyObject_CallMethodOneArg(ch, str_feed, data);
        rc = r == NULL ? -1 : 0;
        Py_XDECREF(r);
    } else {
        rc = inbox_push(in, data);
        if (rc == 0 && !in->listed && (IS_SET(in->next) || IS_SET(in->waiter) ||
                                       (in->unread > in->limit && !in->paused))) {
            in->listed = 1;
            rc = PyList_Append(fed, ch);
        }
    }
    Py_DECREF(data);
    return rc;
}

/* feed(events_address, start, n, channels, fed) -> the index of the first event from
 * start that is not a message (n if none).  Messages go into the inboxes of
 * channels[id] (a dict of Inbox objects; an unknown id was closed meanwhile and is
 * skipped); fed gets each channel that Python must look at, once (see feed_one). */
PyObject *ss_fastio_feed(PyObject *mod, PyObject *const *args, Py_ssize_t nargs)
{
    if (nargs != 5 || !PyDict_Check(args[3]) || !PyList_Check(args[4])) {
        PyErr_SetString(PyExc_TypeError, "feed(events_address, start, n, channels: dict, "
                                         "fed: list)");
        return NULL;
    }
    const ss_event *ev = PyLong_AsVoidPtr(args[0]);
    Py_ssize_t start = PyLong_AsSsize_t(args[1]);
    Py_ssize_t n = PyLong_AsSsize_t(args[2]);
    if (PyErr_Occurred())
        return NULL;
    if (ev == NULL || start < 0 || n < start) {
        PyErr_SetString(PyExc_ValueError, "feed(): no events, or a bad range");
        return NULL;
    }
    Py_ssize_t i = start;
    for (; i < n && ev[i].kind == SS_EV_MESSAGE; i++) {
        if (feed_one(&ev[i], args[3], args[4]) < 0)
            return NULL;
    }
    return PyLong_FromSsize_t(i);
}

/* Set future w's result and run its done callbacks here and now, each in its own context
 * as the loop would run it (a waiting task's step): what sslsock.aio._settle_now does. */
static int settle_now(PyObject *w, PyObject *result)
{
    PyObject *cbs = PyObject_GetAttr(w, str_callbacks);
    if (cbs == NULL)
        return -1;
    int rc = 0;
    Py_ssize_t n = PyList_Check(cbs) ? PyList_GET_SIZE(cbs) : 0;
    for (Py_ssize_t i = 0; i < n && rc == 0; i++) {
        PyObject *pair = PyList_GET_ITEM(cbs, i);
        if (!PyTuple_Check(pair) || PyTuple_GET_SIZE(pair) != 2) {
            PyErr_SetString(PyExc_TypeError, "a future's _callbacks are not (callback, context)");
            rc = -1;
            break;
        }
        PyObject *r = PyObject_CallMethodOneArg(w, str_remove_cb, PyTuple_GET_ITEM(pair, 0));
        rc = r == NULL ? -1 : 0;
        Py_XDECREF(r);
    }
    if (rc == 0) {
        PyObject *r = PyObject_CallMethodOneArg(w, str_set_result, result);
        rc = r == NULL ? -1 : 0;
        Py_XDECREF(r);
    }
    for (Py_ssize_t i = 0; i < n && rc == 0; i++) {
        PyObject *pair = PyList_GET_ITEM(cbs, i);
        PyObject *args[3] = {PyTuple_GET_ITEM(pair, 1), PyTuple_GET_ITEM(pair, 0), w};
        PyObject *r = PyObject_VectorcallMethod(str_run, args,
                                                3 | PY_VECTORCALL_ARGUMENTS_OFFSET, NULL);
        rc = r == NULL ? -1 : 0;
        Py_XDECREF(r);
    }
    Py_DECREF(cbs);
    return rc;
}

/* 1: the channel's `async for` future was settled with its next message (the task's step
 * has run); 0: something else to do, for Python; -1: an exception. */
static int hand_next(Inbox *in)
{
    if (!in->direct || !IS_SET(in->next) || inbox_count(in) == 0 ||
        (in->unread > in->limit && !in->paused))
        return 0;
    PyObject *w = in->next;
    PyObject *done = PyObject_CallMethodNoArgs(w, str_done);
    if (done == NULL)
        return -1;
    int is_done = PyObject_IsTrue(done);
    Py_DECREF(done);
    if (is_done != 0)
        return is_done < 0 ? -1 : 0;  /* (cancelled: Python clears it) */
    in->listed = 0;
    in->next = Py_None;  /* (the reference moves to w) */
    Py_INCREF(Py_None);
    PyObject *data = Inbox_take(in, NULL);
    int rc = data == NULL ? -1 : settle_now(w, data);
    Py_XDECREF(data);
    Py_DECREF(w);
    return rc < 0 ? -1 : 1;
}

/* resume(fed, rest): after a batch, with no task running: each channel of fed whose
 * `async for` waits gets its next message, and its task's step runs now.  Every other
 * channel (and, when a step raises, every one not reached yet) is appended to rest for
 * Python (sslsock.aio._resume_readers). */
PyObject *ss_fastio_resume(PyObject *mod, PyObject *const *args, Py_ssize_t nargs)
{
    if (nargs != 2 || !PyList_Check(args[0]) || !PyList_Check(args[1])) {
        PyErr_SetString(PyExc_TypeError, "resume(fed: list, rest: list)");
        return NULL;
    }
    PyObject *fed = args[0], *rest = args[1];
    Py_ssize_t n = PyList_GET_SIZE(fed);
    for (Py_ssize_t i = 0; i < n; i++) {
        PyObject *ch = PyList_GET_ITEM(fed, i);
        Py_INCREF(ch);
        int rc = PyObject_TypeCheck(ch, &ss_InboxType) ? hand_next((Inbox *)ch) : 0;
        if (rc == 0 && PyList_Append(rest, ch) < 0)
            rc = -1;
        Py_DECREF(ch);
        if (rc < 0) {
            PyObject *type, *value, *tb;
            PyErr_Fetch(&type, &value, &tb);
            for (Py_ssize_t j = i + 1; j < n; j++)
                if (PyList_Append(rest, PyList_GET_ITEM(fed, j)) < 0)
                    PyErr_Clear();
            PyErr_Restore(type, value, tb);
            return NULL;
        }
    }
    Py_RETURN_NONE;
}

int ss_fastio_inbox_init(PyObject *module)
{
    str_feed = PyUnicode_InternFromString("_feed");
    str_callbacks = PyUnicode_InternFromString("_callbacks");
    str_remove_cb = PyUnicode_InternFromString("remove_done_callback");
    str_set_result = PyUnicode_InternFromString("set_result");
    str_done = PyUnicode_InternFromString("done");
    str_run = PyUnicode_InternFromString("run");
    if (!str_feed || !str_callbacks || !str_remove_cb || !str_set_result || !str_done ||
        !str_run || PyType_Ready(&ss_InboxType) < 0)
        return -1;
    Py_INCREF(&ss_InboxType);
    if (PyModule_AddObject(module, "Inbox", (PyObject *)&ss_InboxType) < 0) {
        Py_DECREF(&ss_InboxType);
        return -1;
    }
    return 0;
}
