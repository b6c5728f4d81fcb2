/**
 * The ops CLI's logic (bin/migrate.ts is the thin wrapper): each command starts an execution of
 * a deployed state machine with the documented JSON input, and prints the execution ARN and its
 * console link. Pure functions for parsing and naming; `runOps` does the calls through an
 * injected Step Functions client, so tests need no AWS.
 */
import { randomBytes } from 'node:crypto';
import { setTimeout as sleepMs } from 'node:timers/promises';
import { DescribeExecutionCommand, SFNClient, StartExecutionCommand } from '@aws-sdk/client-sfn';
import { z } from 'zod';
import {
  ConfigError,
  InvalidInputError,
  MigrationError,
  StateMachineArnMissingError,
  StepFunctionsCallError,
} from '../lambdas/core/errors';
import { parseArgs } from './cli-args';

/** The migration's phases, in order; `advance --through` names one. */
export const PHASES = ['PREPARE', 'BACKFILL', 'VERIFY', 'CUTOVER', 'CLEANUP'] as const;
export type Phase = (typeof PHASES)[number];

export const COMMANDS = ['status', 'advance', 'cutover', 'rollback'] as const;
export type CommandName = (typeof COMMANDS)[number];

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

/** Step Functions execution names: 1–80 characters; these use letters, digits, `-` and `_`. */
export const MAX_EXECUTION_NAME_LENGTH = 80;

/**
 * How long `status --wait` waits for the execution, in seconds.
 * @default DEFAULT_WAIT_TIMEOUT_SECONDS
 */
export const DEFAULT_WAIT_TIMEOUT_SECONDS = 300;

export const USAGE = `usage: migrate <command> [flags]
  status   [--wait [--timeout SECONDS]]    start a status run of the Migration state machine
  advance  [--through PHASE]               advance the migration (PHASE: ${PHASES.join(', ')})
  cutover  [--step | --hold | --resume]    run the traffic cutover, one step, hold, or resume
  rollback --reason "…"                    send V2 read traffic back to 0 now
flags of every command:
  --migration-arn ARN  (or MIGRATION_STATE_MACHINE_ARN)
  --cutover-arn ARN    (or CUTOVER_STATE_MACHINE_ARN)
  --rollback-arn ARN   (or ROLLBACK_STATE_MACHINE_ARN)
  --json               print one JSON object as the last line`;

const NOT_A_STATE_MACHINE_ARN =
  'must be a Step Functions state machine ARN (arn:aws:states:…:stateMachine:…, partition aws, aws-cn or aws-us-gov)';

const arnFlag = z.string().regex(STATE_MACHINE_ARN, NOT_A_STATE_MACHINE_ARN).optional();

const common = {
  migrationArn: arnFlag,
  cutoverArn: arnFlag,
  rollbackArn: arnFlag,
  json: z.boolean().default(false),
};

const phase = z
  .string()
  .transform((s) => s.trim().toUpperCase())
  .pipe(z.enum(PHASES, { error: `must be one of ${PHASES.join(', ')}` }));

const schemas = {
  status: z
    .object({
      ...common,
      wait: z.boolean().default(false),
      timeout: z.coerce.number().int().min(1).max(86_400).optional(),
    })
    .strict()
    .refine((f) => f.timeout === undefined || f.wait, { path: ['timeout'], error: 'needs --wait' }),
  advance: z.object({ ...common, through: phase.optional() }).strict(),
  cutover: z
    .object({
      ...common,
      step: z.boolean().default(false),
      hold: z.boolean().default(false),
      resume: z.boolean().default(false),
    })
    .strict()
    .refine((f) => [f.step, f.hold, f.resume].filter(Boolean).length <= 1, {
      path: ['step'],
      error: 'give at most one of --step, --hold, --resume',
    }),
  rollback: z
    .object({
      ...common,
      reason: z
        .string({
          error: (issue) =>
            issue.input === undefined ? 'is required: say why traffic goes back to V1' : 'must be text',
        })
        .trim()
        .min(1, 'must not be empty')
        .max(500, 'must be at most 500 characters'),
    })
    .strict(),
} as const;

const BOOLEAN_FLAGS: Record<CommandName, string[]> = {
  status: ['json', 'wait'],
  advance: ['json'],
  cutover: ['json', 'step', 'hold', 'resume'],
  rollback: ['json'],
};

export interface StateMachineArnFlags {
  migrationArn?: string;
  cutoverArn?: string;
  rollbackArn?: string;
}

/** A parsed command line. */
export type OpsCommand = StateMachineArnFlags & { json: boolean } & (
    | { command: 'status'; wait: boolean; timeoutSeconds: number }
    | { command: 'advance'; through?: Phase }
    | { command: 'cutover'; mode: 'run' | 'step' | 'hold' | 'resume' }
    | { command: 'rollback'; reason: string }
  );

/**
 * Checks the shape of the flags before zod sees them: every flag belongs to the command,
 * valued flags have a value, and there are no stray arguments. (A valued flag given without a
 * value would otherwise read as absent, e.g. `advance --through` as "advance all the way".)
 */
function checkFlagShape(command: CommandName, rest: string[]): void {
  const allowed = new Set(Object.keys(schemas[command].shape));
  const booleans = BOOLEAN_FLAGS[command];
  const issues: { field: string; problem: string }[] = [];
  for (let i = 0; i < rest.length; i++) {
    const arg = rest[i];
    if (!arg.startsWith('--')) {
      issues.push({ field: '(arguments)', problem: `unexpected argument "${arg}"` });
      continue;
    }
    const eq = arg.indexOf('=');
    const flag = eq > 0 ? arg.slice(0, eq) : arg;
    const name = flag.slice(2).replace(/-([a-z0-9])/g, (_, c: string) => c.toUpperCase());
    if (!allowed.has(name)) {
      issues.push({ field: flag, problem: `is not a flag of ${command}` });
      continue;
    }
    if (eq > 0 || booleans.includes(name)) continue;
    if (i + 1 < rest.length && !rest[i + 1].startsWith('--')) i++;
    else issues.push({ field: flag, problem: 'needs a value' });
  }
  if (issues.length > 0) throw new InvalidInputError('command-line flags', issues);
}

/** Parses `<command> [flags]`; throws InvalidInputError naming the bad command or flag. */
export function parseCommand(argv: string[]): OpsCommand {
  const [command, ...rest] = argv;
  if (!command || command.startsWith('-')) {
    throw new InvalidInputError('command line', [
      { field: '(command)', problem: `missing command; expected one of ${COMMANDS.join(', ')}` },
    ]);
  }
  if (!(COMMANDS as readonly string[]).includes(command)) {
    throw new InvalidInputError('command line', [
      { field: '(command)', problem: `unknown command "${command}"; expected one of ${COMMANDS.join(', ')}` },
    ]);
  }
  const name = command as CommandName;
  checkFlagShape(name, rest);
  const booleans = BOOLEAN_FLAGS[name];
  switch (name) {
    case 'status': {
      const f = parseArgs(rest, schemas.status, booleans);
      return {
        ...pick(f),
        command: 'status',
        wait: f.wait,
        timeoutSeconds: f.timeout ?? DEFAULT_WAIT_TIMEOUT_SECONDS,
      };
    }
    case 'advance': {
      const f = parseArgs(rest, schemas.advance, booleans);
      return { ...pick(f), command: 'advance', ...(f.through ? { through: f.through } : {}) };
    }
    case 'cutover': {
      const f = parseArgs(rest, schemas.cutover, booleans);
      const mode = f.step ? 'step' : f.hold ? 'hold' : f.resume ? 'resume' : 'run';
      return { ...pick(f), command: 'cutover', mode };
    }
    case 'rollback': {
      const f = parseArgs(rest, schemas.rollback, booleans);
      return { ...pick(f), command: 'rollback', reason: f.reason };
    }
  }
}

function pick(f: StateMachineArnFlags & { json: boolean }): StateMachineArnFlags & { json: boolean } {
  const out: StateMachineArnFlags & { json: boolean } = { json: f.json };
  if (f.migrationArn) out.migrationArn = f.migrationArn;
  if (f.cutoverArn) out.cutoverArn = f.cutoverArn;
  if (f.rollbackArn) out.rollbackArn = f.rollbackArn;
  return out;
}

/** Which state machine a command starts, and with what input. */
export function executionRequest(
  command: OpsCommand,
  user: string,
): { stateMachine: StateMachineKey; input: Record<string, unknown> } {
  switch (command.command) {
    case 'status':
      return { stateMachine: 'migration', input: { action: 'status' } };
    case 'advance':
      return {
        stateMachine: 'migration',
        input: command.through ? { action: 'advance', through: command.through } : { action: 'advance' },
      };
    case 'cutover':
      return { stateMachine: 'cutover', input: { action: command.mode } };
    case 'rollback':
      return { stateMachine: 'rollback', input: { reason: command.reason, actor: `cli:${user}` } };
  }
}

/**
 * The ARN of `which`: its flag, else its environment variable. Throws
 * StateMachineArnMissingError naming both when neither is set, InvalidInputError when the
 * environment variable is not a state machine ARN.
 */
export function resolveStateMachineArn(
  which: StateMachineKey,
  flags: StateMachineArnFlags,
  env: Record<string, string | undefined>,
): string {
  const sm = STATE_MACHINES[which];
  const fromFlag = flags[`${which}Arn`];
  if (fromFlag) return fromFlag;
  const fromEnv = env[sm.env]?.trim();
  if (!fromEnv) throw new StateMachineArnMissingError(sm.title, sm.flag, sm.env);
  if (!STATE_MACHINE_ARN.test(fromEnv)) {
    throw new InvalidInputError('environment', [
      {
        field: sm.env,
        problem: NOT_A_STATE_MACHINE_ARN,
      },
    ]);
  }
  return fromEnv;
}

/** The region of a Step Functions ARN (state machine or execution). */
export function regionOf(arn: string): string {
  const region = arn.split(':')[3];
  if (!region) throw new InvalidInputError('ARN', [{ field: arn, problem: 'has no region' }]);
  return region;
}

/** `<label>-<UTC yyyymmddThhmmssZ>-<random>`, within Step Functions' 80 characters. */
export function executionName(label: string, now: Date, random: string): string {
  const stamp = now.toISOString().replace(/[-:]/g, '').replace(/\.\d+/, '');
  const suffix = `-${stamp}-${random.replace(/[^A-Za-z0-9]/g, '').slice(0, 16)}`;
  const head = label.replace(/[^A-Za-z0-9_-]+/g, '-').slice(0, MAX_EXECUTION_NAME_LENGTH - suffix.length);
  return `${head}${suffix}`;
}

/** The label an execution name starts with: the command, and its mode or target phase. */
function nameLabel(command: OpsCommand): string {
  if (command.command === 'advance' && command.through) return `advance-${command.through.toLowerCase()}`;
  if (command.command === 'cutover' && command.mode !== 'run') return `cutover-${command.mode}`;
  return command.command;
}

/** The console's domain in each partition that has a public console. */
const CONSOLE_DOMAINS: Record<string, string> = {
  aws: 'console.aws.amazon.com',
  'aws-cn': 'console.amazonaws.cn',
  'aws-us-gov': 'console.amazonaws-us-gov.com',
};

/** The Step Functions console page of an execution, in its partition and region. */
export function consoleLink(executionArn: string): string {
  const region = regionOf(executionArn);
  const partition = executionArn.split(':')[1];
  const domain = CONSOLE_DOMAINS[partition];
  if (!domain)
    throw new InvalidInputError('ARN', [
      {
        field: executionArn,
        problem: `is in partition "${partition}", which has no console this tool knows`,
      },
    ]);
  return `https://${region}.${domain}/states/home?region=${region}#/v2/executions/details/${executionArn}`;
}

const HINTS: Record<string, (ctx: { flag: string; env: string }) => string> = {
  ExecutionAlreadyExists: () =>
    'an execution of that name already exists; run the command again, it picks a new name',
  StateMachineDoesNotExist: ({ flag, env }) =>
    `check ${flag} / ${env}: is the stack deployed in this account and region?`,
  StateMachineDeleting: ({ flag, env }) => `the state machine is being deleted; check ${flag} / ${env}`,
  InvalidArn: ({ flag, env }) => `check ${flag} / ${env}`,
  AccessDenied: () =>
    'these AWS credentials may not call Step Functions on this state machine: check AWS_PROFILE and its IAM policy',
  AccessDeniedException: () =>
    'these AWS credentials may not call Step Functions on this state machine: check AWS_PROFILE and its IAM policy',
  ExecutionLimitExceeded: () => 'too many executions are running; stop one or wait',
  ExecutionDoesNotExist: () => 'the execution is gone (executions are kept 90 days)',
  CredentialsProviderError: () => 'no AWS credentials found: set AWS_PROFILE or log in (aws sso login)',
  ExpiredTokenException: () => 'the AWS session expired: log in again (aws sso login)',
  UnrecognizedClientException: () => 'the AWS credentials are not valid in this account or region',
};

/** A Step Functions SDK failure as a StepFunctionsCallError with the AWS error's name and a hint. */
export function describeAwsError(
  operation: string,
  error: unknown,
  which: StateMachineKey,
  details: Record<string, unknown> = {},
): StepFunctionsCallError {
  const e = error as { name?: unknown; message?: unknown } | null;
  const name = typeof e?.name === 'string' ? e.name : 'Error';
  const message = typeof e?.message === 'string' ? e.message : String(error);
  const hint = HINTS[name]?.(STATE_MACHINES[which]);
  return new StepFunctionsCallError(operation, name, message, hint, details, { cause: error });
}

/** 2 for a bad command line or configuration, 1 for anything else. */
export function exitCodeFor(error: unknown): number {
  return error instanceof InvalidInputError ||
    error instanceof ConfigError ||
    error instanceof StateMachineArnMissingError
    ? 2
    : 1;
}

export interface OpsDeps {
  /** A Step Functions client, or a factory given the state machine's region. */
  sfn: SFNClient | ((region: string) => SFNClient);
  now: () => Date;
  /** The OS user, recorded as the rollback's actor `cli:<user>`. */
  user: string;
  /** Writes a line of standard output. */
  print: (line: string) => void;
  /** Writes a line of standard error. @default print */
  printError?: (line: string) => void;
  /** @default process.env */
  env?: Record<string, string | undefined>;
  /** Random part of execution names. @default 8 hex characters */
  random?: () => string;
  /** DescribeExecution poll interval of `status --wait`, in ms. @default 2000 */
  pollMs?: number;
  sleep?: (ms: number) => Promise<void>;
}

const TERMINAL = new Set(['SUCCEEDED', 'FAILED', 'TIMED_OUT', 'ABORTED']);

function parseOutput(output: string | undefined): unknown {
  if (output === undefined) return undefined;
  try {
    return JSON.parse(output);
  } catch {
    // Step Functions outputs are JSON; show anything else as it came.
    return output;
  }
}

/**
 * Runs one ops command; returns the process exit code (0 done, 1 AWS or execution failure,
 * 2 bad command line). Errors are printed by name with a hint, never as a stack.
 */
export async function runOps(argv: string[], deps: OpsDeps): Promise<number> {
  const print = deps.print;
  const printError = deps.printError ?? deps.print;
  const json = argv.includes('--json');
  if (argv.length === 0 || ['help', '--help', '-h'].includes(argv[0])) {
    print(USAGE);
    return argv.length === 0 ? 2 : 0;
  }
  try {
    const command = parseCommand(argv);
    const { stateMachine, input } = executionRequest(command, deps.user);
    const stateMachineArn = resolveStateMachineArn(stateMachine, command, deps.env ?? process.env);
    const region = regionOf(stateMachineArn);
    const sfn = typeof deps.sfn === 'function' ? deps.sfn(region) : deps.sfn;
    const name = executionName(nameLabel(command), deps.now(), (deps.random ?? defaultRandom)());

    let started;
    try {
      started = await sfn.send(
        new StartExecutionCommand({ stateMachineArn, name, input: JSON.stringify(input) }),
      );
    } catch (error) {
      throw describeAwsError('StartExecution', error, stateMachine, { stateMachineArn, executionName: name });
    }
    const executionArn = started.executionArn!;
    const link = consoleLink(executionArn);
    print(
      `started ${STATE_MACHINES[stateMachine].title} execution ${name} with input ${JSON.stringify(input)}`,
    );
    print(`execution: ${executionArn}`);
    print(`console:   ${link}`);
    const result: Record<string, unknown> = {
      ok: true,
      command: command.command,
      stateMachineArn,
      executionName: name,
      executionArn,
      startDate: started.startDate?.toISOString(),
      input,
      consoleUrl: link,
    };

    let exitCode = 0;
    if (command.command === 'status' && command.wait) {
      const finished = await waitForExecution(sfn, executionArn, command.timeoutSeconds, deps, stateMachine);
      result.status = finished.status;
      if (finished.status === 'SUCCEEDED') {
        result.output = parseOutput(finished.output);
        print(`status: SUCCEEDED`);
        print(JSON.stringify(result.output, null, 2));
      } else if (finished.status === 'RUNNING') {
        exitCode = 1;
        result.ok = false;
        printError(`still RUNNING after ${command.timeoutSeconds} s; follow it in the console`);
      } else {
        exitCode = 1;
        result.ok = false;
        result.error = finished.error;
        result.cause = finished.cause;
        printError(
          `status: ${finished.status}${finished.error ? ` with ${finished.error}` : ''}` +
            `${finished.cause ? `: ${finished.cause}` : ''}`,
        );
      }
    }
    if (json) print(JSON.stringify(result));
    return exitCode;
  } catch (error) {
    const e = error instanceof Error ? error : new Error(String(error));
    printError(`${e.name}: ${e.message}`);
    if (error instanceof InvalidInputError && error.what === 'command line') printError(USAGE);
    if (json) {
      const detail = error instanceof MigrationError ? error.toJSON() : { name: e.name, message: e.message };
      print(JSON.stringify({ ok: false, error: detail }));
    }
    return exitCodeFor(error);
  }
}

function defaultRandom(): string {
  return randomBytes(4).toString('hex');
}

async function waitForExecution(
  sfn: SFNClient,
  executionArn: string,
  timeoutSeconds: number,
  deps: OpsDeps,
  which: StateMachineKey,
): Promise<{ status: string; output?: string; error?: string; cause?: string }> {
  const sleep = deps.sleep ?? ((ms: number) => sleepMs(ms));
  const pollMs = deps.pollMs ?? 2000;
  const deadline = deps.now().getTime() + timeoutSeconds * 1000;
  for (;;) {
    let out;
    try {
      out = await sfn.send(new DescribeExecutionCommand({ executionArn }));
    } catch (error) {
      throw describeAwsError('DescribeExecution', error, which, { executionArn });
    }
    const status = out.status ?? 'RUNNING';
    if (TERMINAL.has(status)) return { status, output: out.output, error: out.error, cause: out.cause };
    if (deps.now().getTime() >= deadline) return { status };
    await sleep(pollMs);
  }
}
