import type { Pool } from 'pg';
import type { LocalAlarms } from '../../lambdas/adapters/local/local-alarms';
import type { LocalRunOptions } from '../../lambdas/adapters/local/local-state-machines';
import { APPLICATION_NAME } from '../../lambdas/core/db';
import type { BatchHandler } from '../../lambdas/ports/queue';
import type { ParameterPort } from '../../lambdas/ports/parameters';

/** Workers whose sessions are terminated in the middle of their windows (`--kill-workers`). */
export interface WorkerKiller {
  wrapHandler: (handler: BatchHandler) => BatchHandler;
  /** Sessions terminated so far. */
  readonly killed: number;
}

/**
 * Terminates one worker's V2 COPY session 15 ms into every third first delivery of a window, as
 * a failover or an administrator's `pg_terminate_backend` would: the worker rides it out (the
 * window is copied again within its delivery, after a backoff) or the window is delivered again,
 * and every row must still land once. One session per fault, not every COPY at once: a fault
 * that killed each retry too would model no real failure.
 */
export function workerKiller(v2: () => Pool): WorkerKiller {
  let killed = 0;
  let deliveries = 0;
  const wrapHandler =
    (handler: BatchHandler): BatchHandler =>
    async (records) => {
      const first = records.find((r) => r.receiveCount === 1 && r.body.includes('copy-window'));
      if (!first || ++deliveries % 3 !== 1) return handler(records);
      const timer = setTimeout(() => {
        void v2()
          .query(
            `SELECT pg_terminate_backend(pid) FROM (
               SELECT pid FROM pg_stat_activity
                WHERE datname = current_database() AND application_name = $1 AND query LIKE 'COPY%'
                  AND pid <> pg_backend_pid() LIMIT 1) AS one`,
            [APPLICATION_NAME],
          )
          .then((r) => {
            killed += r.rowCount ?? 0;
          })
          // The pool may already be closing at the end of the run: nothing left to kill then.
          .catch(() => undefined);
      }, 15);
      try {
        return await handler(records);
      } finally {
        clearTimeout(timer);
      }
    };
  return {
    wrapHandler,
    get killed() {
      return killed;
    },
  };
}

/**
 * `--fail-at cutover:<level>`: the health gate finds an alarm in ALARM once traffic is at that
 * level, so the cutover rolls back by itself.
 */
export function failAtLevel(
  level: number,
  deps: { parameters: ParameterPort; trafficParameter: string; alarms: LocalAlarms },
): NonNullable<LocalRunOptions['wrapTask']> {
  return async (event, run) => {
    if (event.task === 'health-gate') {
      const traffic = Number(await deps.parameters.get(deps.trafficParameter));
      if (traffic === level) deps.alarms.raise('RehearsalFault', `injected by --fail-at cutover:${level}`);
    }
    return run();
  };
}
