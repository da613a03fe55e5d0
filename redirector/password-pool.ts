// bcrypt off the event loop: a small pool of worker threads, each checking one password at a
// time. bcrypt is slow on purpose (tens of ms per check); on the main thread 40 wrong passwords
// held every other request for seconds.
import { createRequire } from 'node:module';
import { Worker } from 'node:worker_threads';

export interface PasswordPool {
  /** Resolves true when `password` matches the bcrypt `hash`; rejects with PoolBusyError when the queue is full. */
  verify(password: string, hash: string): Promise<boolean>;
  close(): Promise<void>;
}

export class PoolBusyError extends Error {}

export interface PasswordPoolOptions {
  /** Worker threads (started on first use). */
  size: number;
  /** Checks waiting for a worker beyond this are refused at once. */
  maxQueue: number;
}

// The worker is a string evaluated as CommonJS, so it needs no file of its own next to the
// compiled code (and runs the same under the test runner, which serves sources, not dist/).
const WORKER_SOURCE = `
const { parentPort, workerData } = require('node:worker_threads');
const bcrypt = require(workerData.bcrypt);
parentPort.on('message', ({ id, password, hash }) => {
  let ok = false;
  try { ok = bcrypt.compareSync(password, hash); } catch { ok = false; }
  parentPort.postMessage({ id, ok });
});
`;

interface Task {
  id: number;
  password: string;
  hash: string;
  resolve(ok: boolean): void;
  reject(err: Error): void;
}

interface Slot {
  worker: Worker;
  task?: Task;
}

export function createPasswordPool(opts: PasswordPoolOptions): PasswordPool {
  const bcryptPath = createRequire(import.meta.url).resolve('bcryptjs');
  const slots: Slot[] = [];
  const queue: Task[] = [];
  let nextId = 0;
  let closed = false;

  const dispatch = (slot: Slot) => {
    const task = queue.shift();
    slot.task = task;
    if (task) slot.worker.postMessage({ id: task.id, password: task.password, hash: task.hash });
  };

  const startWorker = (): Slot => {
    const worker = new Worker(WORKER_SOURCE, { eval: true, workerData: { bcrypt: bcryptPath } });
    worker.unref(); // an idle pool never holds the process open
    const slot: Slot = { worker };
    worker.on('message', (m: { id: number; ok: boolean }) => {
      const task = slot.task;
      if (task?.id === m.id) task.resolve(m.ok);
      dispatch(slot);
    });
    // A dead worker fails its task and is replaced, so the pool keeps its size.
    const replace = (err: Error) => {
      slot.task?.reject(err);
      slot.task = undefined;
      const i = slots.indexOf(slot);
      if (i >= 0) slots.splice(i, 1);
      if (!closed && queue.length) dispatch(addSlot());
    };
    worker.on('error', replace);
    worker.on('exit', (code) => {
      if (slots.includes(slot)) replace(new Error(`password worker exited with code ${code}`));
    });
    return slot;
  };

  const addSlot = () => {
    const s = startWorker();
    slots.push(s);
    return s;
  };

  return {
    verify(password, hash) {
      if (closed) return Promise.reject(new Error('password pool closed'));
      if (queue.length >= opts.maxQueue) return Promise.reject(new PoolBusyError('too many password checks waiting'));
      return new Promise<boolean>((resolve, reject) => {
        queue.push({ id: nextId++, password, hash, resolve, reject });
        const idle = slots.find((s) => !s.task) ?? (slots.length < opts.size ? addSlot() : undefined);
        if (idle) dispatch(idle);
      });
    },
    async close() {
      closed = true;
      for (const t of queue.splice(0)) t.reject(new Error('password pool closed'));
      const all = slots.splice(0);
      await Promise.all(all.map((s) => s.worker.terminate()));
    },
  };
}
