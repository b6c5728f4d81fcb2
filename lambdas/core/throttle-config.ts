import { z } from 'zod';

/**
 * The configuration's `throttle`: the workers' automatic throttle. Before each window they probe
 * V1 and wait while a signal is over its threshold (see lambdas/core/backfill/pressure.ts); ops'
 * pause, ceiling and window size are the backfill control (`migrate throttle`). The defaults are
 * for a production V1.
 */
export const throttleConfigSchema = z
  .object({
    /** A tiny committed write on V1 taking longer than this is pressure. */
    commitLatencyMs: z.coerce.number().min(1).max(60_000).default(50),
    /** More sessions than this running a statement on V1 is pressure; null: not checked. */
    activeSessions: z.coerce.number().int().min(1).max(100_000).nullable().default(null),
    /** A V1 replica replaying further behind than this is pressure; null: not checked. */
    replicaLagSeconds: z.coerce.number().min(0).max(86_400).nullable().default(30),
    /** A probe that does not answer within this is pressure (no signal). */
    probeTimeoutMs: z.coerce.number().min(100).max(60_000).default(2000),
    /** Longest a worker waits for its turn (pressure, a ceiling) before it gives the window back. */
    maxWaitSeconds: z.coerce.number().min(0).max(900).default(60),
    /** First pause between probes while V1 shows pressure (doubling up to 8×). */
    pressureBackoffMs: z.coerce.number().min(10).max(60_000).default(500),
    /** Pressure stays the state this long after it was last seen (no flapping between windows). */
    pressureHoldSeconds: z.coerce.number().min(0).max(3600).default(10),
    /**
     * While V1 showed pressure within `pressureHoldSeconds`, a window larger than this is split
     * before it is copied, so that the worker probes V1 again sooner; null: windows keep their size.
     */
    pressureWindowRows: z.coerce.number().int().min(100).max(5_000_000).nullable().default(5000),
  })
  .strict()
  .prefault({});
