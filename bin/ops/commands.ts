/**
 * The ops CLI's command line: its commands and their flags (each flag's description is its
 * `--help` line). What each command starts is in bin/ops/requests.ts.
 */
import { z } from 'zod';
import type { ControlChange } from '../../lambdas/core/backfill/control';
import { DROP_CONFIRMATION, RENAME_CONFIRMATION } from '../../lambdas/core/cleanup';
import { ROLLBACK_CONFIRMATION } from '../../lambdas/core/cutover';
import { InvalidInputError } from '../../lambdas/core/errors';
import { helpText, HelpRequest, parseArgs, wantsHelp, type CommandHelp } from '../cli-args';
import { DEFAULT_LOCAL_DIR } from '../rehearsal/options';

/** The migration's phases, in order; `advance --through` names one. */
export const PHASES = ['PREPARE', 'BACKFILL', 'VERIFY', 'CUTOVER', 'CLEANUP'] as const;
export type Phase = (typeof PHASES)[number];

/** The three deployed state machines and where the CLI finds their ARNs. */
export const STATE_MACHINES = {
  migration: { title: 'Migration', flag: '--migration-arn', env: 'MIGRATION_STATE_MACHINE_ARN' },
  cutover: { title: 'Cutover', flag: '--cutover-arn', env: 'CUTOVER_STATE_MACHINE_ARN' },
  rollback: { title: 'Rollback', flag: '--rollback-arn', env: 'ROLLBACK_STATE_MACHINE_ARN' },
} as const;
export type StateMachineKey = keyof typeof STATE_MACHINES;

/** `arn:<partition>:states:<region>:<account>:stateMachine:<name>`, in a partition with a console (aws, aws-cn, aws-us-gov). */
export const STATE_MACHINE_ARN =
  /^arn:aws(?:-cn|-us-gov)?:states:([a-z]{2}(?:-[a-z]+)+-\d+):\d{12}:stateMachine:[A-Za-z0-9_-]{1,80}$/;

export const NOT_A_STATE_MACHINE_ARN =
  'must be a Step Functions state machine ARN (arn:aws:states:…:stateMachine:…, partition aws, aws-cn or aws-us-gov)';

/**
 * How long `status --wait` waits for the execution, in seconds.
 * @default DEFAULT_WAIT_TIMEOUT_SECONDS
 */
export const DEFAULT_WAIT_TIMEOUT_SECONDS = 300;

const arnFlag = (which: StateMachineKey) =>
  z
    .string()
    .regex(STATE_MACHINE_ARN, NOT_A_STATE_MACHINE_ARN)
    .optional()
    .describe(`the ${STATE_MACHINES[which].title} state machine (or ${STATE_MACHINES[which].env})`);

const common = {
  migrationArn: arnFlag('migration'),
  cutoverArn: arnFlag('cutover'),
  rollbackArn: arnFlag('rollback'),
  local: z
    .boolean()
    .default(false)
    .describe('run on a local migration (embedded PostgreSQL, the same state machines), no AWS'),
  localDir: z
    .string()
    .min(1)
    .default(DEFAULT_LOCAL_DIR)
    .describe('with --local: where the local migration is kept'),
  json: z.boolean().default(false).describe('print one JSON object as the last line'),
};

const phase = z
  .string()
  .transform((s) => s.trim().toUpperCase())
  .pipe(z.enum(PHASES, { error: `must be one of ${PHASES.join(', ')}` }));

const VALUES = {
  migrationArn: 'ARN',
  cutoverArn: 'ARN',
  rollbackArn: 'ARN',
  localDir: 'DIR',
  timeout: 'SECONDS',
  through: 'PHASE',
  reason: 'TEXT',
  rowsPerSecond: 'N',
  windowRows: 'N',
  autoThrottle: 'on|off',
  confirm: 'WORDS',
};

/** `--confirm WORDS`: a destructive step's confirmation, passed on as the input's `confirm`. */
const confirmFlag = (what: string) =>
  z
    .string()
    .trim()
    .min(1, 'must not be empty')
    .max(100, 'must be at most 100 characters')
    .optional()
    .describe(what);

/** Each command: its flags and its help. */
export const COMMAND_SPECS = {
  status: {
    schema: z
      .object({
        wait: z
          .boolean()
          .default(false)
          .describe('wait for the execution and print its output (status, checklist)'),
        timeout: z.coerce
          .number()
          .int()
          .min(1)
          .max(86_400)
          .optional()
          .describe(`with --wait: give up after SECONDS (default: ${DEFAULT_WAIT_TIMEOUT_SECONDS})`),
        ...common,
      })
      .strict()
      .refine((f) => f.timeout === undefined || f.wait, { path: ['timeout'], error: 'needs --wait' }),
    summary: 'Starts a status run of the Migration state machine: phases, traffic, dual-write, checklist.',
  },
  advance: {
    schema: z
      .object({
        through: phase.optional().describe(`advance phase after phase through PHASE (${PHASES.join(', ')})`),
        confirm: confirmFlag(
          `"${RENAME_CONFIRMATION}": lets cleanup stop dual-write and rename V1's tables (refused without it)`,
        ),
        ...common,
      })
      .strict(),
    summary: 'Advances the migration one phase (Migration state machine), or through --through PHASE.',
  },
  cutover: {
    schema: z
      .object({
        step: z.boolean().default(false).describe('set traffic one level up, then stop'),
        hold: z.boolean().default(false).describe('hold the running cutover where it is'),
        resume: z.boolean().default(false).describe('resume a held cutover'),
        ...common,
      })
      .strict()
      .refine((f) => [f.step, f.hold, f.resume].filter(Boolean).length <= 1, {
        path: ['step'],
        error: 'give at most one of --step, --hold, --resume',
      }),
    summary: 'Runs the traffic cutover (Cutover state machine): every level, one step, hold, or resume.',
  },
  'switch-writes': {
    schema: z.object({ ...common }).strict(),
    summary:
      'Switches the writes to V2 (Cutover state machine): V2 becomes the write primary, V1 is mirrored from V2.',
  },
  rollback: {
    schema: z
      .object({
        reason: z
          .string({
            error: (issue) =>
              issue.input === undefined ? 'is required: say why traffic goes back to V1' : 'must be text',
          })
          .trim()
          .min(1, 'must not be empty')
          .max(500, 'must be at most 500 characters')
          .describe('why traffic goes back to V1 (required; recorded in the audit log)'),
        force: z
          .boolean()
          .default(false)
          .describe(
            'roll back even after cleanup stopped dual-write (V1 has missed every write since; needs --confirm), or past V2 rows V1 cannot take (another tenant; they stay in V2 only)',
          ),
        confirm: confirmFlag(
          `with --force: "${ROLLBACK_CONFIRMATION}" (a forced rollback is refused without it)`,
        ),
        ...common,
      })
      .strict()
      .refine((f) => f.confirm === undefined || f.force, { path: ['confirm'], error: 'needs --force' }),
    summary:
      'Sends the writes back to V1 first (if switched), then V2 read traffic to 0 % (Rollback state machine).',
  },
  'drop-archives': {
    schema: z
      .object({
        confirm: z
          .string({
            error: (issue) =>
              issue.input === undefined
                ? `is required: pass --confirm "${DROP_CONFIRMATION}"`
                : 'must be text',
          })
          .trim()
          .min(1, 'must not be empty')
          .max(100, 'must be at most 100 characters')
          .describe(`"${DROP_CONFIRMATION}" (required): the archived V1 tables are dropped for good`),
        ...common,
      })
      .strict(),
    summary: `Drops the archived V1 tables after the retention period (Migration state machine; needs --confirm).`,
  },
  throttle: {
    schema: z
      .object({
        pause: z.boolean().default(false).describe('pause the backfill and verification workers'),
        resume: z.boolean().default(false).describe('let paused workers go on'),
        rowsPerSecond: z.coerce
          .number()
          .int()
          .min(0)
          .max(10_000_000)
          .optional()
          .describe('at most N V1 rows read per second by all workers together (0 lifts the ceiling)'),
        windowRows: z.coerce
          .number()
          .int()
          .refine((n) => n === 0 || (n >= 100 && n <= 5_000_000), 'must be 0 or between 100 and 5000000')
          .optional()
          .describe('split windows larger than N rows before they are copied (0: as planned)'),
        autoThrottle: z
          .enum(['on', 'off'], { error: 'must be on or off' })
          .optional()
          .describe('the automatic throttle on V1 pressure: on (default) or off'),
        reason: z.string().trim().min(1).max(500).optional().describe('why (recorded in the audit log)'),
        ...common,
      })
      .strict()
      .refine((f) => !(f.pause && f.resume), { path: ['pause'], error: 'give --pause or --resume, not both' })
      .refine(
        (f) =>
          f.pause ||
          f.resume ||
          f.rowsPerSecond !== undefined ||
          f.windowRows !== undefined ||
          f.autoThrottle !== undefined,
        {
          path: ['pause'],
          error: 'say what to change: --pause, --resume, --rows-per-second, --window-rows or --auto-throttle',
        },
      ),
    summary: 'Pauses, resumes or slows the backfill workers now (their next window obeys).',
  },
  redrive: {
    schema: z.object({ ...common }).strict(),
    summary:
      'Sends failed backfill windows back to the workers from the DLQ, once their cause is fixed (Migration state machine).',
  },
  reset: {
    schema: z
      .object({
        local: common.local,
        localDir: common.localDir,
        json: common.json,
      })
      .strict(),
    summary: 'Deletes the local migration (--local only: a deployed migration is never reset).',
  },
} as const;

export type CommandName = keyof typeof COMMAND_SPECS;
export const COMMANDS = Object.keys(COMMAND_SPECS) as CommandName[];

/**
 * How the user typed the command: `migrate` where it runs as the installed package's bin
 * (`node_modules/.bin/migrate`, `dist/bin/migrate.js`), `npm run migrate --` in this checkout.
 */
export const MIGRATE_COMMAND = /(node_modules[\\/]\.bin[\\/]migrate|dist[\\/]bin[\\/]migrate\.js)$/.test(
  process.argv[1] ?? '',
)
  ? 'migrate'
  : 'npm run migrate --';

const commandHelp = (name: CommandName): CommandHelp => ({
  usage: `${MIGRATE_COMMAND} ${name} [flags]`,
  summary: COMMAND_SPECS[name].summary,
  values: VALUES,
  notes: [
    'Without --local, the state machine ARNs come from the flags or the environment variables',
    '(stack outputs MigrationStateMachineArn, CutoverStateMachineArn, RollbackStateMachineArn).',
    'exit status: 0 done; 1 the AWS call or the execution failed; 2 invalid command line or no ARN',
  ],
});

/** `migrate --help`: the commands. */
export const USAGE = [
  `usage: ${MIGRATE_COMMAND} <command> [flags]`,
  '',
  'Starts executions of the deployed Migration, Cutover and Rollback state machines (or, with',
  '--local, runs them on a local migration) and prints what they did.',
  '',
  'commands:',
  ...COMMANDS.map((name) => `  ${name.padEnd(15)}${COMMAND_SPECS[name].summary}`),
  '',
  `Run \`${MIGRATE_COMMAND} <command> --help\` for the flags of a command.`,
].join('\n');

/** The `--help` text of one command. */
export const commandUsage = (name: CommandName) => helpText(COMMAND_SPECS[name].schema, commandHelp(name));

export interface StateMachineArnFlags {
  migrationArn?: string;
  cutoverArn?: string;
  rollbackArn?: string;
}

/** Flags every command has. */
export type CommonFlags = StateMachineArnFlags & { json: boolean; local: boolean; localDir: string };

/** A parsed command line. */
export type OpsCommand = CommonFlags &
  (
    | { command: 'status'; wait: boolean; timeoutSeconds: number }
    | { command: 'advance'; through?: Phase; confirm?: string }
    | { command: 'drop-archives'; confirm: string }
    | { command: 'cutover'; mode: 'run' | 'step' | 'hold' | 'resume' }
    | { command: 'switch-writes' }
    | { command: 'rollback'; reason: string; force: boolean; confirm?: string }
    | { command: 'reset' }
    | { command: 'throttle'; change: ControlChange }
    | { command: 'redrive' }
  );

function commonOf(
  f: Partial<CommonFlags> & { json: boolean; local: boolean; localDir: string },
): CommonFlags {
  const out: CommonFlags = { json: f.json, local: f.local, localDir: f.localDir };
  for (const key of ['migrationArn', 'cutoverArn', 'rollbackArn'] as const) {
    if (f[key]) {
      if (f.local) {
        throw new InvalidInputError('command-line flags', [
          {
            field: STATE_MACHINES[key.replace('Arn', '') as StateMachineKey].flag,
            problem: 'has no meaning with --local',
          },
        ]);
      }
      out[key] = f[key];
    }
  }
  return out;
}

/**
 * Parses `<command> [flags]`. Throws HelpRequest for `--help` (of the CLI or of a command),
 * InvalidInputError naming the bad command or flag.
 */
export function parseCommand(argv: readonly string[]): OpsCommand {
  const [command, ...rest] = argv;
  if (command === undefined || command === 'help' || command === '--help' || command === '-h') {
    const about = command === 'help' ? rest[0] : undefined;
    if (about && (COMMANDS as string[]).includes(about))
      throw new HelpRequest(commandUsage(about as CommandName));
    if (command !== undefined) throw new HelpRequest(USAGE);
  }
  if (!command || command.startsWith('-')) {
    throw new InvalidInputError('command line', [
      { field: '(command)', problem: `missing command; expected one of ${COMMANDS.join(', ')}` },
    ]);
  }
  if (!(COMMANDS as string[]).includes(command)) {
    throw new InvalidInputError('command line', [
      { field: '(command)', problem: `unknown command "${command}"; expected one of ${COMMANDS.join(', ')}` },
    ]);
  }
  const name = command as CommandName;
  if (wantsHelp(rest)) throw new HelpRequest(commandUsage(name));
  switch (name) {
    case 'status': {
      const f = parseArgs(rest, COMMAND_SPECS.status.schema, undefined, name);
      return {
        ...commonOf(f),
        command: 'status',
        wait: f.wait,
        timeoutSeconds: f.timeout ?? DEFAULT_WAIT_TIMEOUT_SECONDS,
      };
    }
    case 'advance': {
      const f = parseArgs(rest, COMMAND_SPECS.advance.schema, undefined, name);
      return {
        ...commonOf(f),
        command: 'advance',
        ...(f.through ? { through: f.through } : {}),
        ...(f.confirm ? { confirm: f.confirm } : {}),
      };
    }
    case 'drop-archives': {
      const f = parseArgs(rest, COMMAND_SPECS['drop-archives'].schema, undefined, name);
      return { ...commonOf(f), command: 'drop-archives', confirm: f.confirm };
    }
    case 'cutover': {
      const f = parseArgs(rest, COMMAND_SPECS.cutover.schema, undefined, name);
      const mode = f.step ? 'step' : f.hold ? 'hold' : f.resume ? 'resume' : 'run';
      return { ...commonOf(f), command: 'cutover', mode };
    }
    case 'switch-writes': {
      const f = parseArgs(rest, COMMAND_SPECS['switch-writes'].schema, undefined, name);
      return { ...commonOf(f), command: 'switch-writes' };
    }
    case 'rollback': {
      const f = parseArgs(rest, COMMAND_SPECS.rollback.schema, undefined, name);
      return {
        ...commonOf(f),
        command: 'rollback',
        reason: f.reason,
        force: f.force,
        ...(f.confirm ? { confirm: f.confirm } : {}),
      };
    }
    case 'throttle': {
      const f = parseArgs(rest, COMMAND_SPECS.throttle.schema, undefined, name);
      const change: ControlChange = {
        ...(f.pause ? { pause: true } : f.resume ? { pause: false } : {}),
        ...(f.rowsPerSecond === undefined ? {} : { rowsPerSecond: f.rowsPerSecond || null }),
        ...(f.windowRows === undefined ? {} : { windowRows: f.windowRows || null }),
        ...(f.autoThrottle ? { autoThrottle: f.autoThrottle === 'on' } : {}),
        ...(f.reason ? { reason: f.reason } : {}),
      };
      return { ...commonOf(f), command: 'throttle', change };
    }
    case 'redrive': {
      const f = parseArgs(rest, COMMAND_SPECS.redrive.schema, undefined, name);
      return { ...commonOf(f), command: 'redrive' };
    }
    case 'reset': {
      const f = parseArgs(rest, COMMAND_SPECS.reset.schema, undefined, name);
      if (!f.local) {
        throw new InvalidInputError('command-line flags', [
          {
            field: '--local',
            problem: 'is required: reset deletes a local migration; a deployed one is never reset',
          },
        ]);
      }
      return { ...commonOf(f), command: 'reset' };
    }
  }
}
