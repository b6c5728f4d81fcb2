import {
  DescribeExecutionCommand,
  ExecutionAlreadyExists,
  SFNClient,
  SFNServiceException,
  StartExecutionCommand,
  StateMachineDoesNotExist,
} from '@aws-sdk/client-sfn';
import { mockClient } from 'aws-sdk-client-mock';
import {
  consoleLink,
  executionName,
  MAX_EXECUTION_NAME_LENGTH,
  parseCommand,
  runOps,
  type OpsDeps,
} from '../../bin/ops';
import { InvalidInputError } from '../../lambdas/core/errors';

const sfn = mockClient(SFNClient);
beforeEach(() => sfn.reset());
afterAll(() => sfn.restore());

const ACCOUNT = '123456789012';
const REGION = 'eu-central-1';
const smArn = (name: string) => `arn:aws:states:${REGION}:${ACCOUNT}:stateMachine:${name}`;
const ENV = {
  MIGRATION_STATE_MACHINE_ARN: smArn('Migration'),
  CUTOVER_STATE_MACHINE_ARN: smArn('Cutover'),
  ROLLBACK_STATE_MACHINE_ARN: smArn('Rollback'),
};
const NOW = new Date('2024-06-07T08:09:10.123Z');

/** Runs the CLI against the mocked client; StartExecution answers with an ARN built from the name. */
async function run(argv: string[], overrides: Partial<OpsDeps> = {}) {
  const out: string[] = [];
  const err: string[] = [];
  const sleeps: number[] = [];
  const code = await runOps(argv, {
    sfn: new SFNClient({ region: REGION }),
    now: () => NOW,
    user: 'alice',
    print: (line) => out.push(line),
    printError: (line) => err.push(line),
    env: ENV,
    random: () => 'abcd1234',
    sleep: async (ms) => {
      sleeps.push(ms);
    },
    pollMs: 5,
    ...overrides,
  });
  return { code, out, err, sleeps };
}

function answerStarts() {
  sfn.on(StartExecutionCommand).callsFake((input: { stateMachineArn: string; name: string }) => ({
    executionArn: input.stateMachineArn.replace(':stateMachine:', ':execution:') + `:${input.name}`,
    startDate: NOW,
  }));
}

const started = () => sfn.commandCalls(StartExecutionCommand).map((c) => c.args[0].input);

describe('commands start the right state machine with the documented input', () => {
  it.each<[string[], string, Record<string, unknown>, string]>([
    [['status'], 'Migration', { action: 'status' }, 'status'],
    [['advance'], 'Migration', { action: 'advance' }, 'advance'],
    [
      ['advance', '--through', 'verify'],
      'Migration',
      { action: 'advance', through: 'VERIFY' },
      'advance-verify',
    ],
    [
      ['advance', '--through=Cleanup'],
      'Migration',
      { action: 'advance', through: 'CLEANUP' },
      'advance-cleanup',
    ],
    [
      ['advance', '--confirm', 'RENAME V1 TABLES'],
      'Migration',
      { action: 'advance', confirm: 'RENAME V1 TABLES' },
      'advance',
    ],
    [
      ['drop-archives', '--confirm', 'DROP V1 ARCHIVES'],
      'Migration',
      { action: 'drop-archives', confirm: 'DROP V1 ARCHIVES' },
      'drop-archives',
    ],
    [['cutover'], 'Cutover', { action: 'run' }, 'cutover'],
    [['cutover', '--step'], 'Cutover', { action: 'step' }, 'cutover-step'],
    [['cutover', '--hold'], 'Cutover', { action: 'hold' }, 'cutover-hold'],
    [['cutover', '--resume'], 'Cutover', { action: 'resume' }, 'cutover-resume'],
    [['switch-writes'], 'Cutover', { action: 'switch-writes' }, 'switch-writes'],
    [
      ['rollback', '--reason', 'p99 latency doubled'],
      'Rollback',
      { reason: 'p99 latency doubled', actor: 'cli:alice' },
      'rollback',
    ],
    [
      ['rollback', '--reason', 'V2 is corrupt', '--force'],
      'Rollback',
      { reason: 'V2 is corrupt', actor: 'cli:alice', force: true },
      'rollback',
    ],
    [
      ['throttle', '--pause', '--reason', 'V1 batch job'],
      'Migration',
      { action: 'throttle', pause: true, reason: 'V1 batch job' },
      'throttle',
    ],
    [
      ['rollback', '--reason', 'V2 is corrupt', '--force', '--confirm', 'ROLL BACK TO STALE V1'],
      'Rollback',
      { reason: 'V2 is corrupt', actor: 'cli:alice', force: true, confirm: 'ROLL BACK TO STALE V1' },
      'rollback',
    ],
  ])('%j starts %s with %j', async (argv, machine, input, label) => {
    answerStarts();

    const { code, out, err } = await run(argv);

    expect(err).toEqual([]);
    expect(code).toBe(0);
    expect(started()).toHaveLength(1);
    const call = started()[0];
    expect(call.stateMachineArn).toBe(smArn(machine));
    expect(JSON.parse(call.input!)).toEqual(input);
    expect(call.name).toBe(`${label}-20240607T080910Z-abcd1234`);
    const executionArn = `arn:aws:states:${REGION}:${ACCOUNT}:execution:${machine}:${call.name}`;
    expect(out).toContain(`execution: ${executionArn}`);
    expect(out).toContain(
      `console:   https://${REGION}.console.aws.amazon.com/states/home?region=${REGION}#/v2/executions/details/${executionArn}`,
    );
  });

  it('prefers the flag over the environment variable', async () => {
    answerStarts();
    const other = 'arn:aws:states:us-east-1:210987654321:stateMachine:OtherCutover';

    await run(['cutover', '--cutover-arn', other]);

    expect(started()[0].stateMachineArn).toBe(other);
  });

  it('creates the client in the state machine region when given a factory', async () => {
    answerStarts();
    const regions: string[] = [];

    const { code } = await run(['status'], {
      sfn: (region) => {
        regions.push(region);
        return new SFNClient({ region });
      },
    });

    expect(code).toBe(0);
    expect(regions).toEqual([REGION]);
  });

  it('--json prints one JSON object describing the execution as the last line', async () => {
    answerStarts();

    const { out } = await run(['advance', '--through', 'backfill', '--json']);

    const last = JSON.parse(out[out.length - 1]);
    expect(last).toMatchObject({
      ok: true,
      command: 'advance',
      stateMachineArn: smArn('Migration'),
      input: { action: 'advance', through: 'BACKFILL' },
      executionName: 'advance-backfill-20240607T080910Z-abcd1234',
      startDate: NOW.toISOString(),
    });
    expect(last.consoleUrl).toBe(consoleLink(last.executionArn));
  });
});

describe('execution names and console links', () => {
  it('keeps names within 80 allowed characters', () => {
    const name = executionName('x'.repeat(200), NOW, 'r@nd/om!');
    expect(name.length).toBeLessThanOrEqual(MAX_EXECUTION_NAME_LENGTH);
    expect(name).toMatch(/^[A-Za-z0-9_-]+$/);
    expect(name.endsWith('-20240607T080910Z-rndom')).toBe(true);
  });

  it('gives each run its own name by default', async () => {
    answerStarts();
    await run(['status'], { random: undefined });
    await run(['status'], { random: undefined });
    const [a, b] = started().map((c) => c.name);
    expect(a).toMatch(/^status-20240607T080910Z-[0-9a-f]{8}$/);
    expect(a).not.toBe(b);
  });

  it('links to the execution in its own region', () => {
    const arn = 'arn:aws:states:ap-southeast-2:123456789012:execution:Migration:status-1';
    expect(consoleLink(arn)).toBe(
      `https://ap-southeast-2.console.aws.amazon.com/states/home?region=ap-southeast-2#/v2/executions/details/${arn}`,
    );
    // China and GovCloud have consoles of their own.
    const cn = 'arn:aws-cn:states:cn-north-1:123456789012:execution:Migration:status-1';
    expect(consoleLink(cn)).toBe(
      `https://cn-north-1.console.amazonaws.cn/states/home?region=cn-north-1#/v2/executions/details/${cn}`,
    );
    const gov = 'arn:aws-us-gov:states:us-gov-west-1:123456789012:execution:Migration:status-1';
    expect(consoleLink(gov)).toBe(
      `https://us-gov-west-1.console.amazonaws-us-gov.com/states/home?region=us-gov-west-1#/v2/executions/details/${gov}`,
    );
    expect(() => consoleLink('arn:aws-iso:states:us-iso-east-1:123456789012:execution:M:x')).toThrow(
      /partition "aws-iso"/,
    );
  });
});

describe('missing or invalid state machine ARNs', () => {
  it.each([
    [['status'], 'MIGRATION_STATE_MACHINE_ARN', '--migration-arn', 'Migration'],
    [['cutover', '--hold'], 'CUTOVER_STATE_MACHINE_ARN', '--cutover-arn', 'Cutover'],
    [['rollback', '--reason', 'x'], 'ROLLBACK_STATE_MACHINE_ARN', '--rollback-arn', 'Rollback'],
    [['switch-writes'], 'CUTOVER_STATE_MACHINE_ARN', '--cutover-arn', 'Cutover'],
  ])('%j without its ARN names the flag and the variable', async (argv, env, flag, title) => {
    const { code, err } = await run(argv, { env: { ...ENV, [env]: undefined } });

    expect(code).toBe(2);
    expect(err[0]).toMatch(
      `StateMachineArnMissingError: No ${title} state machine ARN: pass ${flag} or set ${env} ` +
        `to the stack output ${title}StateMachineArn`,
    );
    expect(started()).toHaveLength(0);
  });

  it('refuses an environment variable that is not a state machine ARN', async () => {
    const { code, err } = await run(['status'], {
      env: { ...ENV, MIGRATION_STATE_MACHINE_ARN: 'arn:aws:lambda:eu-west-1:123456789012:function:x' },
    });

    expect(code).toBe(2);
    expect(err[0]).toMatch(
      /InvalidInputError: .*MIGRATION_STATE_MACHINE_ARN: must be a Step Functions state machine ARN/,
    );
  });

  it('refuses a flag that is not a state machine ARN, naming the flag', async () => {
    const { code, err } = await run(['status', '--migration-arn', 'Migration']);

    expect(code).toBe(2);
    expect(err[0]).toMatch(/--migration-arn: must be a Step Functions state machine ARN/);
  });

  it('refuses a state machine in a partition without a console, before starting anything', async () => {
    const { code, err } = await run([
      'status',
      '--migration-arn',
      'arn:aws-iso:states:us-iso-east-1:123456789012:stateMachine:Migration',
    ]);

    expect(code).toBe(2);
    expect(err[0]).toMatch(/--migration-arn: must be a Step Functions state machine ARN/);
    expect(started()).toHaveLength(0);
  });
});

describe('invalid command lines', () => {
  const flagsError = (argv: string[]) => {
    try {
      parseCommand(argv);
    } catch (error) {
      expect(error).toBeInstanceOf(InvalidInputError);
      return (error as InvalidInputError).issues;
    }
    throw new Error(`${argv.join(' ')} was accepted`);
  };

  it.each<[string[], string, RegExp]>([
    [['deploy'], '(command)', /unknown command "deploy"/],
    [['--json'], '(command)', /missing command/],
    [
      ['advance', '--through', 'DONE'],
      '--through',
      /must be one of PREPARE, BACKFILL, VERIFY, CUTOVER, CLEANUP/,
    ],
    [['advance', '--through'], '--through', /needs a value/],
    [['advance', '--step'], '--step', /is not a flag of advance/],
    [['advance', 'now'], '(arguments)', /unexpected argument "now"/],
    [['cutover', '--step', '--resume'], '--step', /at most one of --step, --hold, --resume/],
    [['rollback'], '--reason', /is required/],
    [['rollback', '--reason', '   '], '--reason', /must not be empty/],
    [['rollback', '--reason', 'x'.repeat(501)], '--reason', /at most 500 characters/],
    [['drop-archives'], '--confirm', /is required: pass --confirm "DROP V1 ARCHIVES"/],
    [['drop-archives', '--confirm', ' '], '--confirm', /must not be empty/],
    [['rollback', '--reason', 'x', '--confirm', 'ROLL BACK TO STALE V1'], '--confirm', /needs --force/],
    [['status', '--timeout', '10'], '--timeout', /needs --wait/],
    [['status', '--wait', '--timeout', 'soon'], '--timeout', /number/],
  ])('%j: %s %s', (argv, field, problem) => {
    const issues = flagsError(argv);
    expect(issues).toContainEqual({ field, problem: expect.stringMatching(problem) });
  });

  it('accepts a 500-character reason and trims it', () => {
    const reason = 'r'.repeat(500);
    expect(parseCommand(['rollback', '--reason', ` ${reason} `])).toMatchObject({
      command: 'rollback',
      reason,
    });
  });

  it('exits 2 with the named error and starts nothing', async () => {
    const { code, err, out } = await run(['cutover', '--step', '--hold', '--json']);

    expect(code).toBe(2);
    expect(err[0]).toMatch(/^InvalidInputError: .*--step/);
    expect(JSON.parse(out[out.length - 1])).toMatchObject({
      ok: false,
      error: { name: 'InvalidInputError' },
    });
    expect(started()).toHaveLength(0);
  });

  it('prints the usage for help (exit 0) and for no command (exit 2)', async () => {
    for (const argv of [['help'], ['--help'], ['-h']]) {
      const help = await run(argv);
      expect(help.code).toBe(0);
      expect(help.out[0]).toMatch(/^usage: npm run migrate -- <command>/);
    }
    const none = await run([]);
    expect(none.code).toBe(2);
    expect(none.err.join('\n')).toMatch(/missing command[\s\S]*usage: npm run migrate/);
  });

  it('prints a command’s flags for `<command> --help` and `help <command>`, starting nothing', async () => {
    for (const argv of [
      ['rollback', '--help'],
      ['help', 'rollback'],
      ['rollback', '--reason', '--help'],
    ]) {
      const help = await run(argv);
      expect(help.code).toBe(0);
      expect(help.out[0]).toMatch(/^usage: npm run migrate -- rollback \[flags\]/);
      expect(help.out[0]).toMatch(/--reason TEXT +why traffic goes back to V1/);
    }
    expect(started()).toHaveLength(0);
  });

  it('lists the valid flags when one is unknown', () => {
    expect(flagsError(['cutover', '--halt'])).toContainEqual({
      field: '--halt',
      problem: expect.stringMatching(
        /^is not a flag of cutover; its flags are --step, --hold, --resume, .*--local/,
      ),
    });
  });

  it.each<[string[], string]>([
    [['status', '--local', '--migration-arn', smArn('Migration')], '--migration-arn'],
    [['reset'], '--local'],
  ])('%j: refuses %s', (argv, field) => {
    expect(flagsError(argv).map((i) => i.field)).toContain(field);
  });
});

describe('AWS errors are reported by name with a hint', () => {
  const denied = () =>
    new SFNServiceException({
      name: 'AccessDeniedException',
      $fault: 'client',
      message: 'User is not authorized to perform: states:StartExecution',
      $metadata: { httpStatusCode: 400 },
    });

  it.each<[string, () => Error, RegExp]>([
    [
      'ExecutionAlreadyExists',
      () => new ExecutionAlreadyExists({ message: 'Execution Already Exists', $metadata: {} }),
      /run the command again/,
    ],
    [
      'StateMachineDoesNotExist',
      () => new StateMachineDoesNotExist({ message: 'State Machine Does Not Exist', $metadata: {} }),
      /check --migration-arn \/ MIGRATION_STATE_MACHINE_ARN/,
    ],
    ['AccessDeniedException', denied, /check AWS_PROFILE and its IAM policy/],
  ])('%s', async (name, error, hint) => {
    sfn.on(StartExecutionCommand).rejects(error());

    const { code, err, out } = await run(['advance', '--json']);

    expect(code).toBe(1);
    expect(err[0]).toMatch(new RegExp(`^StepFunctionsCallError: StartExecution failed with ${name}: `));
    expect(err[0]).toMatch(hint);
    expect(JSON.parse(out[out.length - 1])).toMatchObject({
      ok: false,
      error: { name: 'StepFunctionsCallError', awsError: name, stateMachineArn: smArn('Migration') },
    });
  });

  it('reports an unexpected error by its name too', async () => {
    sfn.on(StartExecutionCommand).rejects(new Error('socket hang up'));

    const { code, err } = await run(['status']);

    expect(code).toBe(1);
    expect(err[0]).toBe('StepFunctionsCallError: StartExecution failed with Error: socket hang up');
  });
});

describe('status --wait', () => {
  it('polls DescribeExecution until it ends and prints the output JSON', async () => {
    answerStarts();
    sfn
      .on(DescribeExecutionCommand)
      .resolvesOnce({ status: 'RUNNING' })
      .resolvesOnce({ status: 'RUNNING' })
      .resolves({ status: 'SUCCEEDED', output: JSON.stringify({ phase: 'BACKFILL', status: 'running' }) });

    const { code, out, sleeps } = await run(['status', '--wait', '--json']);

    expect(code).toBe(0);
    expect(sleeps).toEqual([5, 5]);
    const executionArn =
      started()[0].stateMachineArn!.replace(':stateMachine:', ':execution:') + `:${started()[0].name}`;
    expect(sfn.commandCalls(DescribeExecutionCommand)[0].args[0].input).toEqual({ executionArn });
    expect(out).toContain('status: SUCCEEDED');
    expect(out.join('\n')).toContain('"phase": "BACKFILL"');
    expect(JSON.parse(out[out.length - 1])).toMatchObject({
      ok: true,
      status: 'SUCCEEDED',
      output: { phase: 'BACKFILL', status: 'running' },
    });
  });

  it('exits 1 with the execution error and cause when it fails', async () => {
    answerStarts();
    sfn
      .on(DescribeExecutionCommand)
      .resolves({ status: 'FAILED', error: 'DatabaseConnectionError', cause: 'Cannot connect to V2' });

    const { code, err, out } = await run(['status', '--wait', '--json']);

    expect(code).toBe(1);
    expect(err).toContain('status: FAILED with DatabaseConnectionError: Cannot connect to V2');
    expect(JSON.parse(out[out.length - 1])).toMatchObject({ ok: false, error: 'DatabaseConnectionError' });
  });

  it('gives up after --timeout seconds and says it is still running', async () => {
    answerStarts();
    sfn.on(DescribeExecutionCommand).resolves({ status: 'RUNNING' });
    let t = NOW.getTime();

    const { code, err } = await run(['status', '--wait', '--timeout', '3'], {
      now: () => new Date(t),
      sleep: async () => {
        t += 1000;
      },
    });

    expect(code).toBe(1);
    expect(err[0]).toMatch(/still RUNNING after 3 s/);
    expect(sfn.commandCalls(DescribeExecutionCommand)).toHaveLength(4);
  });

  it('does not wait without --wait', async () => {
    answerStarts();
    await run(['status']);
    expect(sfn.commandCalls(DescribeExecutionCommand)).toHaveLength(0);
  });
});
