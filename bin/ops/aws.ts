/**
 * The ops CLI on AWS: starts an execution of a deployed state machine with the runbook's input,
 * prints its ARN and console link, and with `status --wait` polls it and prints its output. All
 * calls go through an injected Step Functions client, so tests need no AWS.
 */
import { randomBytes } from 'node:crypto';
import { setTimeout as sleepMs } from 'node:timers/promises';
import { DescribeExecutionCommand, SFNClient, StartExecutionCommand } from '@aws-sdk/client-sfn';
import { InvalidInputError } from '../../lambdas/core/errors';
import { CONSOLE_DOMAINS } from '../../lib/console';
import { StateMachineArnMissingError, StepFunctionsCallError } from '../cli-errors';
import {
  NOT_A_STATE_MACHINE_ARN,
  STATE_MACHINE_ARN,
  STATE_MACHINES,
  type OpsCommand,
  type StateMachineArnFlags,
  type StateMachineKey,
} from './commands';
import { executionRequest } from './requests';

/** Step Functions execution names: 1–80 characters; these use letters, digits, `-` and `_`. */
export const MAX_EXECUTION_NAME_LENGTH = 80;

/** What a command run needs from outside: I/O, time, the user, and (on AWS) a Step Functions client. */
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

export interface OpsDeps {
  /** A Step Functions client, or a factory given the state machine's region. */
  sfn: SFNClient | ((region: string) => SFNClient);
  /** Runs a command with --local (bin/ops/local.ts); returns its exit code. */
  local?: (command: OpsCommand, deps: OpsDeps) => Promise<number>;
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

/** A command run on AWS: exit code 0 done, 1 AWS or execution failure; throws for bad input. */
export async function runOnAws(
  command: Exclude<OpsCommand, { command: 'reset' }>,
  deps: OpsDeps,
): Promise<number> {
  const print = deps.print;
  const printError = deps.printError ?? deps.print;
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
  if (command.json) print(JSON.stringify(result));
  return exitCode;
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
