import {
  CloudWatchClient,
  CloudWatchServiceException,
  DescribeAlarmsCommand,
  type CompositeAlarm,
  type MetricAlarm,
} from '@aws-sdk/client-cloudwatch';
import { mockClient } from 'aws-sdk-client-mock';
import {
  alarmNamesInRule,
  CloudWatchAlarms,
  DESCRIBE_ALARMS_MAX_NAMES,
} from '../../../../lambdas/adapters/aws/cloudwatch-alarms';
import { AlarmLookupError } from '../../../../lambdas/core/errors';

const cw = mockClient(CloudWatchClient);
beforeEach(() => cw.reset());
afterAll(() => cw.restore());

const HEALTH = 'iot-migration-MigrationHealth';
const arn = (name: string) => `arn:aws:cloudwatch:eu-west-1:123456789012:alarm:${name}`;

const composite = (state: CompositeAlarm['StateValue'], rule: string, reason = `composite ${state}`) =>
  ({ AlarmName: HEALTH, StateValue: state, StateReason: reason, AlarmRule: rule }) satisfies CompositeAlarm;
const metric = (name: string, state: MetricAlarm['StateValue'], reason = `${name} ${state}`) =>
  ({ AlarmName: name, StateValue: state, StateReason: reason }) satisfies MetricAlarm;

const port = (alarmNames?: string[]) =>
  new CloudWatchAlarms(new CloudWatchClient({ region: 'eu-west-1' }), {
    compositeAlarmName: HEALTH,
    alarmNames,
  });

const calls = () => cw.commandCalls(DescribeAlarmsCommand).map((c) => c.args[0].input);

describe('alarmNamesInRule', () => {
  it('reads names and ARNs, quoted or not, once each', () => {
    expect(
      alarmNamesInRule(`(ALARM("${arn('Dlq')}") OR ALARM(Errors)) AND NOT OK("Latency p99") OR ALARM("Dlq")`),
    ).toEqual(['Dlq', 'Errors', 'Latency p99']);
    expect(alarmNamesInRule('TRUE')).toEqual([]);
  });
});

describe('CloudWatchAlarms.firing', () => {
  it('is empty when the composite and the alarms it watches are OK', async () => {
    cw.on(DescribeAlarmsCommand, { AlarmNames: [HEALTH] }).resolves({
      CompositeAlarms: [composite('OK', `ALARM("${arn('Dlq')}") OR ALARM("${arn('Errors')}")`)],
    });
    cw.on(DescribeAlarmsCommand, { AlarmNames: ['Dlq', 'Errors'] }).resolves({
      MetricAlarms: [metric('Dlq', 'OK'), metric('Errors', 'INSUFFICIENT_DATA')],
    });

    expect(await port().firing()).toEqual([]);
    expect(calls()[0]).toMatchObject({ AlarmTypes: ['CompositeAlarm', 'MetricAlarm'] });
  });

  it('returns the composite and the children in ALARM with their StateReason', async () => {
    cw.on(DescribeAlarmsCommand, { AlarmNames: [HEALTH] }).resolves({
      CompositeAlarms: [composite('ALARM', `ALARM("${arn('Dlq')}") OR ALARM("${arn('Errors')}")`, 'Dlq')],
    });
    cw.on(DescribeAlarmsCommand, { AlarmNames: ['Dlq', 'Errors'] }).resolves({
      MetricAlarms: [metric('Dlq', 'ALARM', 'Threshold Crossed: 1 datapoint [3.0]'), metric('Errors', 'OK')],
    });

    expect(await port().firing()).toEqual([
      { name: HEALTH, state: 'ALARM', reason: 'Dlq' },
      { name: 'Dlq', state: 'ALARM', reason: 'Threshold Crossed: 1 datapoint [3.0]' },
    ]);
  });

  it('reads the given alarm names in one call instead of the rule', async () => {
    cw.on(DescribeAlarmsCommand).resolves({
      CompositeAlarms: [composite('OK', 'ALARM(Ignored)')],
      MetricAlarms: [metric('A', 'ALARM'), metric('B', 'OK')],
    });

    expect(await port(['A', 'B', HEALTH]).firing()).toEqual([
      { name: 'A', state: 'ALARM', reason: 'A ALARM' },
    ]);
    expect(calls()).toHaveLength(1);
    expect(calls()[0].AlarmNames).toEqual([HEALTH, 'A', 'B']);
  });

  it('follows NextToken through every page', async () => {
    cw.on(DescribeAlarmsCommand)
      .resolvesOnce({ CompositeAlarms: [composite('ALARM', '')], NextToken: 'page-2' })
      .resolvesOnce({ MetricAlarms: [metric('A', 'ALARM')], NextToken: 'page-3' })
      .resolvesOnce({ MetricAlarms: [metric('B', 'ALARM')] });

    const firing = await port(['A', 'B']).firing();

    expect(firing.map((a) => a.name)).toEqual([HEALTH, 'A', 'B']);
    expect(calls().map((c) => c.NextToken)).toEqual([undefined, 'page-2', 'page-3']);
  });

  it(`asks for at most ${DESCRIBE_ALARMS_MAX_NAMES} names per call`, async () => {
    const names = Array.from({ length: 150 }, (_, i) => `alarm-${i}`);
    cw.on(DescribeAlarmsCommand).callsFake((input: { AlarmNames: string[] }) => ({
      CompositeAlarms: input.AlarmNames.includes(HEALTH) ? [composite('OK', '')] : [],
      MetricAlarms: input.AlarmNames.filter((n) => n !== HEALTH).map((n) => metric(n, 'OK')),
    }));

    expect(await port(names).firing()).toEqual([]);
    expect(calls().map((c) => c.AlarmNames?.length)).toEqual([100, 51]);
  });

  it('fails with AlarmLookupError when the composite alarm does not exist', async () => {
    cw.on(DescribeAlarmsCommand).resolves({});

    await expect(port().firing()).rejects.toThrow(AlarmLookupError);
    await expect(port().firing()).rejects.toThrow(`CloudWatch has no alarm named ${HEALTH}`);
  });

  it('fails when a named alarm does not exist', async () => {
    cw.on(DescribeAlarmsCommand).resolves({ CompositeAlarms: [composite('OK', '')] });

    await expect(port(['Gone']).firing()).rejects.toThrow(/no alarm named Gone/);
  });

  it('wraps DescribeAlarms failures, retryable when throttled', async () => {
    cw.on(DescribeAlarmsCommand).rejects(
      new CloudWatchServiceException({
        name: 'Throttling',
        $fault: 'client',
        message: 'Rate exceeded',
        $metadata: { httpStatusCode: 400 },
      }),
    );
    const throttled = await port()
      .firing()
      .catch((e: unknown) => e);
    expect(throttled).toBeInstanceOf(AlarmLookupError);
    expect((throttled as AlarmLookupError).retryable).toBe(true);
    expect((throttled as AlarmLookupError).message).toMatch(
      /DescribeAlarms failed: Throttling: Rate exceeded/,
    );

    cw.reset();
    cw.on(DescribeAlarmsCommand).rejects(
      new CloudWatchServiceException({
        name: 'AccessDenied',
        $fault: 'client',
        message: 'no',
        $metadata: { httpStatusCode: 403 },
      }),
    );
    const denied = await port()
      .firing()
      .catch((e: unknown) => e);
    expect((denied as AlarmLookupError).retryable).toBe(false);
  });
});
