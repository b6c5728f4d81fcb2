import { controlSchema } from '../db';
import { GuardRefusedError } from '../errors';
import { auditEvent, phaseStates, type MigrationContext } from '../migration-state';
import { parseWorkMessage } from '../work-messages';
import type { DeadLetterMessage, DeadLetterPort, QueuePort } from '../../ports/queue';

/** Dead letters one redrive reads at most (SQS gives 10 per call). @default 1000 */
export const DEFAULT_REDRIVE_MAX_MESSAGES = 1000;

export interface RedriveResult {
  /** Windows whose dead-lettered message went back to the worker queue. */
  redriven: number[];
  /** Failed windows with no message left in the DLQ: pending again, the backfill sends them. */
  resetToPending: number[];
  /** Dead letters of windows already done (a copy landed meanwhile), or duplicates: deleted. */
  staleDeleted: number;
  /** Dead letters that are not backfill windows (verification slices, bad bodies): left in the DLQ. */
  leftInDeadLetters: number;
  /** What ops do next. */
  next: string;
}

const isWindowMessage = (body: string): number | undefined => {
  try {
    const message = parseWorkMessage(body);
    return message.type === 'copy-window' ? message.windowId : undefined;
  } catch {
    return undefined;
  }
};

/**
 * Redrives the backfill's failed windows after their cause is fixed (`migrate redrive`, the
 * Migration input `{"action":"redrive"}`): every dead-lettered window message whose window is not
 * done goes back to the worker queue (its window queued again, then the dead letter deleted), and
 * failed windows whose message is gone (the DLQ's retention, or a local run's in-memory DLQ) are
 * set pending, for the backfill's next poll to send. A running backfill picks them up; a failed
 * Phase 2 goes on with `migrate advance`. Takes no lock (like the throttle), so it works while a
 * run holds it. Refused (GuardRefusedError, nothing changed) before the backfill was planned.
 */
export async function redriveWindows(
  ctx: MigrationContext & { queue: QueuePort; deadLetters?: DeadLetterPort },
  options: { maxMessages?: number } = {},
): Promise<RedriveResult> {
  const ctl = controlSchema(ctx.config);
  const phases = await phaseStates(ctx);
  const backfill = phases.find((p) => p.phase === 'BACKFILL');
  if (!backfill || backfill.status === 'pending')
    throw new GuardRefusedError('Redriving backfill windows', [
      'the backfill has not started: there are no windows to redrive',
    ]);
  const maxMessages = options.maxMessages ?? DEFAULT_REDRIVE_MAX_MESSAGES;
  const letters: DeadLetterMessage[] = [];
  if (ctx.deadLetters) {
    for (;;) {
      const batch = await ctx.deadLetters.receive(Math.min(10, maxMessages - letters.length));
      letters.push(...batch);
      if (batch.length === 0 || letters.length >= maxMessages) break;
    }
  }
  const byWindow = new Map<number, DeadLetterMessage[]>();
  let leftInDeadLetters = 0;
  for (const letter of letters) {
    const windowId = isWindowMessage(letter.body);
    if (windowId === undefined) leftInDeadLetters++;
    else byWindow.set(windowId, [...(byWindow.get(windowId) ?? []), letter]);
  }
  const open = byWindow.size
    ? (
        await ctx.v2.query<{ id: string }>(
          `SELECT id FROM ${ctl}.windows WHERE id = ANY($1::bigint[]) AND status <> 'done'`,
          [[...byWindow.keys()]],
        )
      ).rows.map((r) => Number(r.id))
    : [];
  const redriven = open.sort((a, b) => a - b);
  const stale = letters.filter((l) => {
    const id = isWindowMessage(l.body);
    return id !== undefined && (!redriven.includes(id) || byWindow.get(id)![0] !== l);
  });
  if (redriven.length > 0) {
    // Queued first, so that the backfill's pump does not send them a second time.
    await ctx.v2.query(
      `UPDATE ${ctl}.windows SET status = 'queued', queued_at = now() WHERE id = ANY($1::bigint[]) AND status <> 'done'`,
      [redriven],
    );
    try {
      await ctx.queue.sendAll(redriven.map((windowId) => JSON.stringify({ type: 'copy-window', windowId })));
    } catch (error) {
      // Not sent: back to pending, for the backfill's pump (the dead letters stay where they are).
      await ctx.v2.query(
        `UPDATE ${ctl}.windows SET status = 'pending' WHERE id = ANY($1::bigint[]) AND status = 'queued'`,
        [redriven],
      );
      throw error;
    }
  }
  const handled = [...redriven.map((id) => byWindow.get(id)![0]), ...stale];
  if (handled.length > 0) await ctx.deadLetters!.delete(handled.map((l) => l.receipt));
  const reset = await ctx.v2.query<{ id: string }>(
    `UPDATE ${ctl}.windows SET status = 'pending' WHERE status = 'failed' RETURNING id`,
  );
  const resetToPending = reset.rows.map((r) => Number(r.id)).sort((a, b) => a - b);
  const next =
    backfill.status === 'failed'
      ? 'Phase 2 had failed: run `migrate advance` (Migration {"action":"advance"}) to go on with the backfill'
      : backfill.status === 'running'
        ? 'the running backfill copies them'
        : 'nothing more: the backfill is done';
  const result: RedriveResult = {
    redriven,
    resetToPending,
    staleDeleted: stale.length,
    leftInDeadLetters,
    next,
  };
  await auditEvent(ctx, 'backfill.redriven', { ...result });
  return result;
}
