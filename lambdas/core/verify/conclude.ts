import { VerificationFailedError } from '../errors';
import { checkWindows, type VerifyDeps } from './checksums';
import { repairRun } from './repair';
import { buildReport, finishVerification, type VerificationReport } from './report';
import { compareAgain } from './row-diff';
import { recordResults } from './runs';

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
}

const sleep = (ms: number) => new Promise((resolve) => setTimeout(resolve, ms));

/**
 * Gives in-flight writes their time: after `delayMs`, each mismatched window is checked again
 * (recorded as matched when it now agrees) and each differing sampled row compared again.
 * The report says how many windows and rows needed this, and how many settled.
 */
export async function recheckInFlight(
  deps: VerifyDeps,
  report: VerificationReport,
  delayMs = DEFAULT_RECHECK_DELAY_MS,
): Promise<VerificationReport> {
  if (report.clean) return report;
  await sleep(delayMs);
  let windowsSettled = 0;
  let rowsSettled = 0;
  for (const mismatch of report.mismatches) {
    const { windows } = await checkWindows(deps, [mismatch.windowId]);
    if (!windows[0].matched) continue;
    await recordResults(deps.v2, deps.config, report.runId, windows);
    windowsSettled++;
    rowsSettled += mismatch.differences.length;
  }
  const remaining = await compareAgain(deps, report.sample.differences);
  rowsSettled += report.sample.differences.length - remaining.length;
  const rebuilt = await buildReport(deps, report.runId);
  const rows =
    report.mismatches.reduce((n, m) => n + m.differences.length, 0) + report.sample.differences.length;
  return {
    ...rebuilt,
    clean: rebuilt.mismatches.length === 0 && remaining.length === 0,
    sample: { checked: report.sample.checked, differences: remaining },
    repaired: report.repaired,
    recheck: { delayMs, windows: report.mismatches.length, windowsSettled, rows, rowsSettled },
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
    report = await repairRun(deps, report, { maxAttempts: options.maxRepairAttempts });
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
