import { Match, Template } from 'aws-cdk-lib/assertions';
import * as lambda from 'aws-cdk-lib/aws-lambda';
import * as sfn from 'aws-cdk-lib/aws-stepfunctions';
import * as sqs from 'aws-cdk-lib/aws-sqs';
import { MigrationAlarms, type MigrationAlarmsProps } from '../../lib/constructs/alarms';
import { networkStack } from './helpers';

function setup(overrides: Partial<MigrationAlarmsProps> = {}) {
  const { stack } = networkStack();
  const deadLetterQueue = new sqs.Queue(stack, 'Dlq', { enforceSSL: true });
  const worker = new lambda.Function(stack, 'Worker', {
    runtime: lambda.Runtime.NODEJS_22_X,
    handler: 'index.handler',
    code: lambda.Code.fromInline('exports.handler = async () => ({})'),
  });
  const alarms = new MigrationAlarms(stack, 'Alarms', { deadLetterQueue, worker, ...overrides });
  return { stack, alarms };
}

describe('MigrationAlarms', () => {
  it('alarms on any message in the DLQ', () => {
    Template.fromStack(setup().stack).hasResourceProperties('AWS::CloudWatch::Alarm', {
      MetricName: 'ApproximateNumberOfMessagesVisible',
      Namespace: 'AWS/SQS',
      Threshold: 0,
      ComparisonOperator: 'GreaterThanThreshold',
      TreatMissingData: 'notBreaching',
    });
  });

  it('alarms on the backend error rate and p99 latency when configured', () => {
    const template = Template.fromStack(
      setup({
        backendMetrics: {
          namespace: 'IotBackend',
          dimensions: { Service: 'api' },
          errorRate: { metricName: 'ErrorRate', threshold: 2 },
          p99Latency: { metricName: 'Latency', threshold: 800 },
        },
      }).stack,
    );

    template.hasResourceProperties('AWS::CloudWatch::Alarm', {
      Namespace: 'IotBackend',
      MetricName: 'ErrorRate',
      Dimensions: [{ Name: 'Service', Value: 'api' }],
      Statistic: 'Average',
      Threshold: 2,
    });
    template.hasResourceProperties('AWS::CloudWatch::Alarm', {
      Namespace: 'IotBackend',
      MetricName: 'Latency',
      ExtendedStatistic: 'p99',
      Threshold: 800,
    });
  });

  it('alarms on V2 database CPU and connections only when an instance is given', () => {
    expect(
      Template.fromStack(setup().stack).findResources('AWS::CloudWatch::Alarm', {
        Properties: { Namespace: 'AWS/RDS' },
      }),
    ).toEqual({});

    const template = Template.fromStack(setup({ v2RdsInstanceId: 'iot-v2', databaseConnections: 150 }).stack);
    template.hasResourceProperties('AWS::CloudWatch::Alarm', {
      Namespace: 'AWS/RDS',
      MetricName: 'CPUUtilization',
      Dimensions: [{ Name: 'DBInstanceIdentifier', Value: 'iot-v2' }],
      Threshold: 80,
    });
    template.hasResourceProperties('AWS::CloudWatch::Alarm', {
      Namespace: 'AWS/RDS',
      MetricName: 'DatabaseConnections',
      Threshold: 150,
    });
  });

  it('alarms on shadow-read mismatches in the shared namespace', () => {
    Template.fromStack(setup().stack).hasResourceProperties('AWS::CloudWatch::Alarm', {
      Namespace: 'IotMigration',
      MetricName: 'ShadowReadMismatch',
      Threshold: 0,
    });
  });

  it('combines every alarm into MigrationHealth, which notifies an encrypted topic', () => {
    const template = Template.fromStack(setup({ email: 'ops@example.com' }).stack);

    template.hasResourceProperties('AWS::CloudWatch::CompositeAlarm', {
      AlarmName: 'TestStack-MigrationHealth',
      AlarmRule: Match.objectLike({
        'Fn::Join': ['', Match.arrayWith([Match.stringLikeRegexp('ALARM\\(')])],
      }),
      AlarmActions: [{ Ref: Match.stringLikeRegexp('^AlarmsTopic') }],
    });
    template.hasResourceProperties('AWS::SNS::Topic', { KmsMasterKeyId: Match.anyValue() });
    template.hasResourceProperties('AWS::SNS::Subscription', {
      Protocol: 'email',
      Endpoint: 'ops@example.com',
    });
    template.hasResourceProperties('AWS::KMS::Key', { EnableKeyRotation: true });
  });

  it('starts the rollback state machine when MigrationHealth goes to ALARM', () => {
    const { stack, alarms } = setup();
    const rollback = new sfn.StateMachine(stack, 'Rollback', {
      definitionBody: sfn.DefinitionBody.fromChainable(new sfn.Pass(stack, 'Done')),
    });
    alarms.routeAlarmToRollback(rollback);
    const template = Template.fromStack(stack);

    template.hasResourceProperties('AWS::Events::Rule', {
      EventPattern: {
        source: ['aws.cloudwatch'],
        'detail-type': ['CloudWatch Alarm State Change'],
        resources: [{ 'Fn::GetAtt': [Match.stringLikeRegexp('^AlarmsHealth'), 'Arn'] }],
        detail: { state: { value: ['ALARM'] } },
      },
      Targets: [
        Match.objectLike({
          Arn: { Ref: Match.stringLikeRegexp('^Rollback') },
          InputTransformer: {
            InputPathsMap: { 'detail-alarmName': '$.detail.alarmName' },
            InputTemplate: '{"reason":"alarm:<detail-alarmName>","actor":"alarm"}',
          },
          DeadLetterConfig: {
            Arn: { 'Fn::GetAtt': [Match.stringLikeRegexp('RollbackStartFailures'), 'Arn'] },
          },
        }),
      ],
    });
    template.hasResourceProperties('AWS::IAM::Policy', {
      PolicyDocument: {
        Statement: [
          {
            Effect: 'Allow',
            Action: 'states:StartExecution',
            Resource: { Ref: Match.stringLikeRegexp('^Rollback') },
          },
        ],
      },
    });
  });

  it('routes to one rollback only', () => {
    const { stack, alarms } = setup();
    const machine = () =>
      new sfn.StateMachine(stack, `M${Math.random()}`.replace('.', ''), {
        definitionBody: sfn.DefinitionBody.fromChainable(
          new sfn.Pass(stack, `P${Math.random()}`.replace('.', '')),
        ),
      });
    alarms.routeAlarmToRollback(machine());

    expect(() => alarms.routeAlarmToRollback(machine())).toThrow(
      /TestStack\/Alarms: routeAlarmToRollback was already called/,
    );
  });
});
