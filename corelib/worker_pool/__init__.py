"""A pool of spawned worker processes that each build long-lived state once and pull tasks one at a time.

Modelled on CPython's concurrent/futures/process.py, with what a browser pool needs on top:
- a worker builds its state once (the factory, e.g. a browser) and keeps it across tasks;
- the parent waits on every worker's pipe AND process sentinel, so a worker killed outright
  (SIGKILL, TerminateProcess, OOM) is noticed at once; its task is requeued or failed, the app is
  told (on_worker_exit) so it can kill orphaned browsers, and a replacement is started;
- a task that runs too long is aborted inside the worker (handler.abort() from a watchdog thread),
  and if the worker still does not come back, the parent kills it;
- repeated worker deaths stop the pool with a clear PoolStopped instead of a restart loop;
- a worker whose parent dies (SIGKILL of the app) notices at once, aborts its task, closes its
  handler (browser, profile clone) and exits, instead of working on as an orphan.

Data flow. The parent drives everything from the caller's thread, inside results() and stop(); no
thread of its own:

  caller         | parent: pool.py (API, lock, wait loop) |  per-worker   | a spawned process per worker: worker.py
                 |   manager.py (books, decisions)        |  pipes        |
                 |   handle.py (one process's pipes)      |               |
                 |                                        |               |  _worker_main:
  submit(task) --+-> pending TaskQueue                    |               |   factory(ctx, config) -> handler, once
                 |     | an idle worker gets ONE task     |               |
                 |     +----------------------------------+-- Task/STOP ->+-> handler.run(task) -> TaskResult
                 |                                        |               |   watchdog: handler.abort() on timeout
  results() <----+-- output <-- the worker's messages <---+-- messages ---+-- WorkerReady, TaskStarted, TaskDone,
   TaskResult    |                                        |               |   EventMessage, WorkerLog, WorkerNote
   | Event       |                                        |               |
   | WorkerLost <+-- a death: requeue or fail its task, <-+-- sentinel ---+-- the process is gone (exit, kill, OOM)
                 |   on_worker_exit(WorkerInfo), start a  |               |
                 |   replacement or give up (PoolStopped) |               |

Modules: types (what callers build and read), pool (WorkerPool), manager (the parent's books and
decisions), handle (the parent's handle on one worker process), worker (inside a worker process).
See pobatch.corelib.worker_pool.task_queue for why tasks are handed out by the parent rather than read from one
shared multiprocessing.Queue. Only the parent keeps books; workers just run tasks and report.
"""
from pobatch.corelib.worker_pool.pool import WorkerPool
from pobatch.corelib.worker_pool.types import (
    Handler,
    PoolStopped,
    WorkerInfo,
    WorkerLost,
    WorkerSpec,
    WorkerState,
    result_from_exception,
)
from pobatch.corelib.worker_pool.worker import WorkerContext

__all__ = [
    "Handler",
    "PoolStopped",
    "WorkerContext",
    "WorkerInfo",
    "WorkerLost",
    "WorkerPool",
    "WorkerSpec",
    "WorkerState",
    "result_from_exception",
]
