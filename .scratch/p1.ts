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

