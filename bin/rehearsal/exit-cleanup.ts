import { existsSync, readFileSync, rmSync } from 'node:fs';
import { join } from 'node:path';

/**
 * Signals that end the process; each exits with 128 + its number after the cleanup. Not SIGPIPE:
 * Node ignores it so that a write to a closed socket fails with EPIPE instead, and a listener
 * for it would turn every database connection that a server ends mid-write (a terminated COPY
 * under --kill-workers) into the end of the run. A closed standard output arrives as EPIPE.
 */
const FATAL_SIGNALS = { SIGHUP: 1, SIGINT: 2, SIGTERM: 15 } as const;
const EXIT_ON_EPIPE = 128 + 13;

/** The postmaster's process id, from `postmaster.pid` in a PostgreSQL data directory. */
function postmasterPid(dataDir: string): number | undefined {
  const file = join(dataDir, 'postmaster.pid');
  if (!existsSync(file)) return undefined;
  const pid = Number(readFileSync(file, 'utf8').split('\n')[0]);
  return Number.isInteger(pid) && pid > 0 ? pid : undefined;
}

/** Whether a process still runs (a zombie, exited but not yet reaped, does not). */
function running(pid: number): boolean {
  try {
    const stat = readFileSync(`/proc/${pid}/stat`, 'utf8');
    return stat.slice(stat.lastIndexOf(')') + 2, stat.lastIndexOf(')') + 3) !== 'Z';
  } catch {
    // No /proc (not Linux): ask the kernel; a zombie still answers, so the wait below ends by time.
    try {
      process.kill(pid, 0);
      return true;
    } catch {
      return false;
    }
  }
}

const pause = (ms: number) => Atomics.wait(new Int32Array(new SharedArrayBuffer(4)), 0, 0, ms);

/**
 * Synchronously stops the PostgreSQL server whose data is in `dataDir` (immediate shutdown: no
 * checkpoint, nothing more is written) and removes `dir`. Synchronous because it also runs in
 * the process's `exit` event, where nothing asynchronous runs any more.
 */
export function removeNow(dir: string, dataDir: string): void {
  const pid = postmasterPid(dataDir);
  if (pid !== undefined) {
    try {
      process.kill(pid, 'SIGQUIT');
    } catch {
      // Already gone.
    }
    for (let waited = 0; waited < 10_000 && running(pid); waited += 50) pause(50);
  }
  rmSync(dir, { recursive: true, force: true, maxRetries: 5, retryDelay: 100 });
}

/**
 * Removes `dir` (a folder holding an embedded PostgreSQL's data in `dataDir`) whenever the
 * process ends: normal exit, an uncaught error, SIGINT, SIGTERM, SIGHUP, or a broken
 * pipe on standard output (EPIPE, as when the output is piped into `head`). Returns a function
 * that removes the folder now and unregisters the handlers (the normal end of a run).
 */
export function removeOnExit(dir: string, dataDir: string): () => void {
  let done = false;
  const cleanup = () => {
    if (done) return;
    done = true;
    removeNow(dir, dataDir);
  };
  const onSignal = (signal: keyof typeof FATAL_SIGNALS) => {
    cleanup();
    process.exit(128 + FATAL_SIGNALS[signal]);
  };
  const onStreamError = (error: NodeJS.ErrnoException) => {
    // The reader went away: nobody sees the rest of the run, so it ends here, cleanly (with
    // the status a shell gives a process ended by SIGPIPE).
    if (error.code !== 'EPIPE') return;
    cleanup();
    process.exit(EXIT_ON_EPIPE);
  };
  const signals = Object.keys(FATAL_SIGNALS) as (keyof typeof FATAL_SIGNALS)[];
  for (const signal of signals) process.on(signal, onSignal);
  process.on('exit', cleanup);
  process.stdout.on('error', onStreamError);
  process.stderr.on('error', onStreamError);
  return () => {
    cleanup();
    for (const signal of signals) process.off(signal, onSignal);
    process.off('exit', cleanup);
    process.stdout.off('error', onStreamError);
    process.stderr.off('error', onStreamError);
  };
}
