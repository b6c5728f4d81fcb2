import { z } from 'zod';
import { describeIssues } from './config';
import { InvalidInputError } from './errors';
import { PHASES } from './migration-state';

/**
 * What reaches the orchestrator from outside, and its schemas: the start-execution input of the
 * three state machines (from ops, the CLI or the alarm rule) and the task events the state
 * machines send (lambdas/core/orchestrator.ts dispatches them).
 */

const phase = z.preprocess((v) => (typeof v === 'string' ? v.toUpperCase() : v), z.enum(PHASES));

/** Confirmation words of a destructive step (see cleanup.ts: RENAME_CONFIRMATION, DROP_CONFIRMATION). */
const confirm = z.string().max(100);

/**
 * Start-execution input of the Migration state machine. `confirm` is what cleanup's rename
 * needs (`RENAME V1 TABLES`); `drop-archives` needs `DROP V1 ARCHIVES`.
 */
export const migrationInputSchema = z.discriminatedUnion('action', [
  z.object({ action: z.literal('advance'), through: phase.optional(), confirm: confirm.optional() }).strict(),
  z.object({ action: z.literal('status') }).strict(),
  // The backfill control (`migrate throttle`): the rest of the input is a control change.
  z.object({ action: z.literal('throttle') }).passthrough(),
  z.object({ action: z.literal('drop-archives'), confirm }).strict(),
  // Failed backfill windows back to the workers (`migrate redrive`), see backfill/redrive.ts.
  z.object({ action: z.literal('redrive') }).strict(),
]);

/** Start-execution input of the Cutover state machine. */
export const cutoverInputSchema = z
  .object({ action: z.enum(['run', 'step', 'hold', 'resume', 'switch-writes']).default('run') })
  .strict();

/**
 * Start-execution input of the Rollback state machine (from ops, or from the alarm rule).
 * `actor` is who asked, as they say (recorded as `requestedBy`; the audit log's actor is the
 * execution); `force` with `confirm` (ROLLBACK_CONFIRMATION) rolls back after dual-write stopped.
 */
export const rollbackInputSchema = z
  .object({
    reason: z.string().trim().min(1, 'say why').max(500),
    actor: z.string().trim().min(1).max(200).optional(),
    force: z.boolean().optional(),
    confirm: confirm.optional(),
  })
  .strict();

/** The input parsed by `schema`, or InvalidInputError naming what is wrong with it (`what`). */
export function validate<S extends z.ZodType>(what: string, schema: S, input: unknown): z.infer<S> {
  const result = schema.safeParse(input ?? {});
  if (!result.success) throw new InvalidInputError(what, describeIssues(result.error));
  return result.data;
}

/**
 * The acting execution: the state machines pass `$$.Execution.Id`, and the audit log records
 * it, so it must be an execution ARN (`arn:<partition>:states:<region>:<account>:execution:<machine>:<name>`).
 */
export const EXECUTION_ARN = /^arn:aws[a-z-]*:states:[a-z0-9-]+:\d{12}:execution:[^:\s]{1,80}:[^:\s]{1,80}$/;
const actor = z
  .string()
  .max(2048)
  .regex(EXECUTION_ARN, 'must be the acting Step Functions execution ARN ($$.Execution.Id)');
/** A destructive step's request: its confirmation words (absent ones are refused by name). */
const confirmedRequest = z.object({ confirm: z.string().max(100).optional() }).passthrough();
const archive = z
  .object({
    id: z.string(),
    kind: z.enum(['rds-snapshot', 'aurora-snapshot', 'pg_dump', 'export']),
    location: z.string(),
  })
  .strict();

const rollbackRequest = z
  .object({
    reason: z.string().min(1),
    actor: z.string().optional(),
    force: z.boolean().optional(),
    confirm: z.string().optional(),
  })
  .passthrough();

/** The tasks of the write switch (Cutover) and of the rollback from it (Rollback). */
const writeSwitchTasks = [
  z.object({ task: z.literal('switch-writes'), actor }),
  z.object({ task: z.literal('rollback-writes-plan'), actor, request: rollbackRequest }),
  z.object({
    task: z.literal('drain-repair-queue'),
    actor,
    request: rollbackRequest,
    drain: z.object({ startedAt: z.iso.datetime().optional() }).passthrough(),
  }),
  z.object({ task: z.literal('check-writes'), actor, request: rollbackRequest }),
  z.object({ task: z.literal('switch-writes-back'), actor, request: rollbackRequest }),
] as const;

/** Every task event the state machines send. */
export const taskEventSchema = z.discriminatedUnion('task', [
  z.object({ task: z.literal('validate-migration-input'), input: z.unknown() }),
  z.object({ task: z.literal('validate-cutover-input'), input: z.unknown() }),
  z.object({ task: z.literal('validate-rollback-input'), input: z.unknown() }),
  z.object({ task: z.literal('status'), actor }),
  z.object({ task: z.literal('throttle'), actor, request: z.object({}).passthrough() }),
  z.object({ task: z.literal('redrive'), actor }),
  z.object({
    task: z.literal('begin'),
    actor,
    request: z.object({ through: phase.optional() }).passthrough(),
  }),
  z.object({ task: z.literal('next-phase'), actor, target: phase }),
  z.object({ task: z.literal('prepare'), actor }),
  z.object({ task: z.literal('start-backfill'), actor }),
  z.object({ task: z.literal('poll-backfill'), actor }),
  z.object({ task: z.literal('start-verify'), actor }),
  z.object({ task: z.literal('poll-verify'), actor, runId: z.number().int().positive() }),
  z.object({ task: z.literal('start-cleanup'), actor, request: confirmedRequest.optional() }),
  z.object({ task: z.literal('archive-status'), actor, archive }),
  z.object({ task: z.literal('finish-cleanup'), actor, archive, request: confirmedRequest.optional() }),
  z.object({ task: z.literal('drop-archives'), actor, request: confirmedRequest.optional() }),
  z.object({ task: z.literal('release'), actor }),
  // From the EventBridge rule on Step Functions "Execution Status Change" (ABORTED, TIMED_OUT,
  // FAILED): `actor` is the execution that ended, which no Catch may have recorded.
  z.object({
    task: z.literal('execution-ended'),
    actor,
    status: z.enum(['ABORTED', 'TIMED_OUT', 'FAILED', 'SUCCEEDED']),
    stateMachineArn: z.string().min(1).max(2048).optional(),
  }),
  z.object({
    task: z.literal('record-failure'),
    actor,
    error: z.object({ Error: z.string(), Cause: z.string().optional() }).passthrough(),
  }),
  z.object({ task: z.literal('start-cutover'), actor }),
  z.object({ task: z.literal('cutover-next'), actor }),
  z.object({ task: z.literal('health-gate'), actor }),
  z.object({ task: z.literal('complete-cutover'), actor }),
  z.object({ task: z.literal('hold'), actor }),
  z.object({ task: z.literal('resume'), actor }),
  z.object({ task: z.literal('step'), actor }),
  z.object({
    task: z.literal('rollback'),
    actor,
    request: rollbackRequest,
  }),
  ...writeSwitchTasks,
]);

/** An event of the write switch's tasks (Cutover) or of the rollback from it (Rollback). */
export type WriteSwitchEvent = z.infer<(typeof writeSwitchTasks)[number]>;
