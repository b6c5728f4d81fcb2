import type { Pool } from 'pg';

/**
 * The V1 pressure probe a worker runs before each window: three cheap signals, compared with
 * configurable thresholds. Any signal over its threshold is pressure; a probe that fails or
 * does not answer in time is pressure too ("no signal"), as Spirit assumes.
 */

export interface PressureThresholds {
  /** A tiny committed write on V1 (a transactional WAL message) taking longer than this. */
  commitLatencyMs: number;
  /** More sessions than this running a statement on V1 (this tool's own included); null: not checked. */
  activeSessions: number | null;
  /** A V1 replica replaying more than this far behind; null: not checked. */
  replicaLagSeconds: number | null;
  /** The probe must answer within this, or V1 is taken to be under pressure. */
  probeTimeoutMs: number;
}

export interface Probe {
  at: string;
  /** Round trip of a committed write (or of an xid assignment, where WAL messages are not allowed). */
  commitMs: number | null;
  commitKind: 'wal-message' | 'xid' | null;
  activeSessions: number | null;
  /** Worst replay lag of V1's replicas; null when V1 has none (or none is visible). */
  replicaLagSeconds: number | null;
  error?: string;
}

export interface ProbeResult {
  probe: Probe;
  /** Why V1 is under pressure (categorical, so that it names a period), or null. */
  pressure: string | null;
}

const round = (n: number) => Math.round(n * 100) / 100;

/** Whether a probe connection may use pg_logical_emit_message (remembered per pool). */
const walMessageRefused = new WeakSet<Pool>();

async function measure(v1: Pool): Promise<Probe> {
  const client = await v1.connect();
  let broken = false;
  try {
    let commitKind: Probe['commitKind'] = 'wal-message';
    let started = performance.now();
    if (!walMessageRefused.has(v1)) {
      try {
        // Autocommit: one round trip that writes WAL and waits for its commit to be flushed, as
        // every write of the backend does; no table of V1 is touched.
        await client.query(`SELECT pg_logical_emit_message(true, 'iot-v2-migration', 'probe')`);
      } catch (error) {
        const code = (error as { code?: string }).code;
        if (code !== '42501' && code !== '42883' && code !== '55000') throw error;
        walMessageRefused.add(v1);
      }
    }
    if (walMessageRefused.has(v1)) {
      commitKind = 'xid';
      started = performance.now();
      await client.query('SELECT txid_current()');
    }
    const commitMs = round(performance.now() - started);
    const { rows } = await client.query<{ active: string; lag: string | null; replicas: string }>(
      `SELECT (SELECT count(*) FROM pg_stat_activity
                WHERE state = 'active' AND backend_type = 'client backend' AND pid <> pg_backend_pid()) AS active,
              (SELECT max(extract(epoch FROM greatest(replay_lag, write_lag, flush_lag)))
                 FROM pg_stat_replication) AS lag,
              (SELECT count(*) FROM pg_stat_replication) AS replicas`,
    );
    const r = rows[0];
    return {
      at: new Date().toISOString(),
      commitMs,
      commitKind,
      activeSessions: Number(r.active),
      replicaLagSeconds: Number(r.replicas) > 0 ? round(Number(r.lag ?? 0)) : null,
    };
  } catch (error) {
    broken = true;
    throw error;
  } finally {
    client.release(broken);
  }
}

/** Probes V1 once and judges it against the thresholds. */
export async function probeV1(v1: Pool, thresholds: PressureThresholds): Promise<ProbeResult> {
  let timer: NodeJS.Timeout | undefined;
  const timeout = new Promise<never>((_, reject) => {
    timer = setTimeout(
      () => reject(new Error(`no answer within ${thresholds.probeTimeoutMs} ms`)),
      thresholds.probeTimeoutMs,
    );
  });
  let probe: Probe;
  try {
    const measuring = measure(v1);
    // A probe that loses the race still ends (and releases its connection) on its own.
    measuring.catch(() => undefined);
    probe = await Promise.race([measuring, timeout]);
  } catch (error) {
    const message = (error as Error).message;
    return {
      probe: {
        at: new Date().toISOString(),
        commitMs: null,
        commitKind: null,
        activeSessions: null,
        replicaLagSeconds: null,
        error: message,
      },
      pressure: 'no signal from V1',
    };
  } finally {
    clearTimeout(timer);
  }
  return { probe, pressure: judge(probe, thresholds) };
}

/** The first signal over its threshold, as a cause that names it and the threshold. */
export function judge(probe: Probe, t: PressureThresholds): string | null {
  if (probe.commitMs !== null && probe.commitMs > t.commitLatencyMs)
    return `V1 commit latency over ${t.commitLatencyMs} ms`;
  if (t.activeSessions !== null && probe.activeSessions !== null && probe.activeSessions > t.activeSessions)
    return `V1 active sessions over ${t.activeSessions}`;
  if (
    t.replicaLagSeconds !== null &&
    probe.replicaLagSeconds !== null &&
    probe.replicaLagSeconds > t.replicaLagSeconds
  )
    return `V1 replica lag over ${t.replicaLagSeconds} s`;
  return null;
}
