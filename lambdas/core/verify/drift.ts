import { controlSchema } from '../db';
import { checkWindows, type VerifyDeps } from './checksums';
import { recheckInFlight } from './conclude';
import { buildReport, finishVerification, type VerificationReport } from './report';
import { recordResults, touchedWindows } from './runs';
import { touchedWindowsInV2 } from './touched-v2';

/**
 * The cutover's drift check: re-verifies only the windows touched since `since`, window by
 * window, as an incremental run recorded like any other. No repair: drift fails the gate.
 * With `inV2` (V2 the write primary), windows whose V2 rows changed since then are checked too.
 */
export async function verifyTouchedWindows(
  deps: VerifyDeps,
  since: Date,
  options: { recheckDelayMs?: number; inV2?: boolean } = {},
): Promise<VerificationReport> {
  const ctl = controlSchema(deps.config);
  const touched = [
    ...new Set([
      ...(await touchedWindows(deps, since)),
      ...(options.inV2 ? await touchedWindowsInV2(deps, since) : []),
    ]),
  ].sort((a, b) => a - b);
  const run = await deps.v2.query<{ id: string }>(
    `INSERT INTO ${ctl}.verification_runs (scope, since) VALUES ('incremental', $1) RETURNING id`,
    [since],
  );
  const runId = Number(run.rows[0].id);
  for (const windowId of touched)
    await recordResults(deps.v2, deps.config, runId, (await checkWindows(deps, [windowId])).windows);
  const report = await recheckInFlight(deps, await buildReport(deps, runId), options.recheckDelayMs);
  await finishVerification(deps, report);
  return report;
}
