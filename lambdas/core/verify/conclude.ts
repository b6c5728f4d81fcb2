import { VerificationFailedError } from '../errors';
import { checkWindows, type VerifyDeps } from './checksums';
import { repairRun } from './repair';
import { repairRunFromV2 } from './repair-reverse';
import { buildReport, finishVerification, type VerificationReport } from './report';
import { compareAgain, compareKeys, explainWindow, type WindowMismatch } from './row-diff';
import { recordResults } from './runs';
import { eachLimited } from '../each-limited';

/**
 * How long a mismatch may be a write still in flight: a dual write reaches V2 after V1, within
 * the client's V2 timeout (2 s by default), so a row found different is compared again after
 * this delay before it counts (AWS DMS waits `RecordFailureDelayInMinutes`; Spirit re-checksums).
 */
export const DEFAULT_RECHECK_DELAY_MS = 2_000;

export interface ConcludeOptions {
  /** Rows per table deep-compared column by column. */
  sampleSize?: number;
  /** Re-copy mismatched windows and re-sync differing sampled rows (default true). */
  repair?: boolean;
  maxRepairAttempts?: number;
  /** @default DEFAULT_RECHECK_DELAY_MS */
  recheckDelayMs?: number;
  /** The side repairs take as the truth: V1, or V2 once it is the write primary. @default 'v1' */
  truth?: 'v1' | 'v2';
}

const sleep = (ms: number) => new Promise((resolve) => setTimeout(resolve, ms));

/** How many times a mismatched window is checked again before its mismatch counts. */
export const MAX_RECHECK_ROUNDS = 5;

/**
 * Re-checks mismatched windows in rounds, `delayMs` apart, until each agrees or a row of it
 * differs in two rounds in a row (then the difference is real). Under live writes a window may
 * never be caught with no write in flight: its mismatch counts as in flight as long as every
 * row found different in one round agrees in the next, and after MAX_RECHECK_ROUNDS such rounds
 * it is recorded as matched. A mismatch that no row explains (a wrong stored digest) is real
 * when no look at the window explains it; one look alone proves nothing, since a write that
 * lands between the window's checksums and the look at its rows leaves nothing to explain.
 * Returns the ids of the windows that settled.
 */
async function recheckWindows(
  deps: VerifyDeps,
  runId: number,
  mismatches: WindowMismatch[],
  delayMs: number,
): Promise<Set<number>> {
  const settled = new Set<number>();
  // Per window still open: the keys that differed last round (null: too many to list), and
  // how many looks so far found no row to explain the mismatch.
  let open = new Map(
    mismatches.map((m) => [
      m.windowId,
      {
        m,
        differing: m.truncated ? null : m.differences.map((d) => d.key),
        unexplained: !m.truncated && m.differences.length === 0 ? 1 : 0,
      },
    ]),
  );
  for (let round = 1; round <= MAX_RECHECK_ROUNDS && open.size > 0; round++) {
    await sleep(delayMs);
    const next: typeof open = new Map();
    await eachLimited(
      [...open.values()],
      deps.config.batch.concurrency,
      async ({ m, differing, unexplained }) => {
        const { windows } = await checkWindows(deps, [m.windowId]);
        if (windows[0].matched) {
          await recordResults(deps.v2, deps.config, runId, windows);
          settled.add(m.windowId);
          return;
        }
        // A row that differed last round and still differs is a real difference.
        if (differing === null) return;
        if (differing.length > 0 && (await compareKeys(deps, m.table, differing)).length > 0) return;
        const now = await explainWindow(deps, windows[0].window);
        if (now.truncated) return;
        const looks = unexplained + (now.differences.length === 0 ? 1 : 0);
        if (round === MAX_RECHECK_ROUNDS) {
          // No look explained it: no write in flight makes that.
          if (looks > MAX_RECHECK_ROUNDS) return;
          // Every difference went away within a delay: writes kept landing, none stayed wrong.
          await recordResults(deps.v2, deps.config, runId, [{ ...windows[0], matched: true }]);
          settled.add(m.windowId);
          return;
        }
        next.set(m.windowId, { m, differing: now.differences.map((d) => d.key), unexplained: looks });
      },
    );
    open = next;
  }
  return settled;
}

/**
 * Gives in-flight writes their time: mismatched windows are checked again (recheckWindows) and
 * each differing sampled row compared again after `delayMs`. The report says how many windows
 * and rows needed this, and how many settled.
 */
export async function recheckInFlight(
  deps: VerifyDeps,
  report: VerificationReport,
  delayMs = DEFAULT_RECHECK_DELAY_MS,
): Promise<VerificationReport> {
  if (report.clean) return report;
  const [settled, remaining] = await Promise.all([
    recheckWindows(deps, report.runId, report.mismatches, delayMs),
    sleep(delayMs).then(() => compareAgain(deps, report.sample.differences)),
  ]);
  let rowsSettled = report.sample.differences.length - remaining.length;
  for (const m of report.mismatches) if (settled.has(m.windowId)) rowsSettled += m.differences.length;
  const rebuilt = await buildReport(deps, report.runId);
  const rows =
    report.mismatches.reduce((n, m) => n + m.differences.length, 0) + report.sample.differences.length;
  return {
    ...rebuilt,
    clean: rebuilt.mismatches.length === 0 && remaining.length === 0,
    sample: { checked: report.sample.checked, differences: remaining },
    repaired: report.repaired,
    recheck: { delayMs, windows: report.mismatches.length, windowsSettled: settled.size, rows, rowsSettled },
  };
}

/**
 * Concludes a verification run once every slice is checked: the report (mismatched windows
 * explained row by row, a sample deep-compared), a re-check of what may be in flight, then
 * repair (windows re-copied, sampled rows re-synced, each checked again), and the outcome
 * recorded. The report is clean only when no window and no sampled row still differs.
 */
export async function concludeRun(
  deps: VerifyDeps,
  runId: number,
  options: ConcludeOptions = {},
): Promise<VerificationReport> {
  let report = await buildReport(deps, runId, { sampleSize: options.sampleSize });
  report = await recheckInFlight(deps, report, options.recheckDelayMs);
  if (!report.clean && options.repair !== false)
    report =
      options.truth === 'v2'
        ? await repairRunFromV2(deps, report, { maxAttempts: options.maxRepairAttempts })
        : await repairRun(deps, report, { maxAttempts: options.maxRepairAttempts });
  await finishVerification(deps, report);
  return report;
}

/** The named failure of a report that is not clean; its counts are the report's. */
export function verificationFailure(report: VerificationReport): VerificationFailedError {
  const windows = report.mismatches.length;
  const rows = report.sample.differences.length;
  const parts = [
    ...(windows > 0 ? [`${windows} window(s)`] : []),
    ...(rows > 0
      ? [
          `${rows} sampled row(s) (${report.sample.differences
            .slice(0, 5)
            .map((d) => `${d.table} ${d.key} ${d.kind}`)
            .join('; ')}${rows > 5 ? '; …' : ''})`,
        ]
      : []),
  ];
  const what = parts.length > 0 ? parts.join(' and ') : 'the report is not clean';
  return new VerificationFailedError(
    `${what} still differ${report.repaired.length > 0 || report.repairedRows?.length ? ' after repair' : ''}`,
    report.mismatches.map((m) => ({
      table: m.table,
      windowId: m.windowId,
      v1Rows: m.v1Rows,
      v2Rows: m.v2Rows,
    })),
  );
}
