import { Duration, Validations, type App } from 'aws-cdk-lib';
import { Match, Template } from 'aws-cdk-lib/assertions';
import * as iam from 'aws-cdk-lib/aws-iam';
import * as sfn from 'aws-cdk-lib/aws-stepfunctions';
import { AwsSolutionsChecks } from 'cdk-nag';
import { RepairPipeline, type RepairPipelineProps } from '../../lib/constructs/repair-pipeline';
import { MigrationStack, type MigrationStackProps } from '../../lib/migration-stack';
import { WORKER_ENTRY } from '../../lib/constructs/backfill-pipeline';
import { appWithoutBundling, existingConfig } from './helpers';
import {
  expectEventSource,
  expectRedrive,
  expectTlsOnly,
  expectWorkerPermissions,
  queueArn,
  queueWorkerStack,
} from './queue-worker-assertions';

function pipeline(overrides: Partial<RepairPipelineProps> = {}) {
  const { stack, props } = queueWorkerStack();
  const construct = new RepairPipeline(stack, 'Repair', { ...props, ...overrides });
  return { stack, construct };
}

const repairQueueArn = queueArn('Repair');

describe('RepairPipeline', () => {
  let template: Template;
  beforeAll(() => {
    const { stack, construct } = pipeline({ maxConcurrency: 3, maxReceiveCount: 4 });
    const backend = new iam.Role(stack, 'BackendRole', {
      assumedBy: new iam.ServicePrincipal('ecs-tasks.amazonaws.com'),
    });
    construct.grantSend(backend);
    template = Template.fromStack(stack);
  });

  it('redrives to the repair DLQ after maxReceiveCount and hides messages for 6× the worker timeout', () => {
    expectRedrive(template, 'Repair', { visibilityTimeout: 360, maxReceiveCount: 4 });
  });

  it('denies non-TLS access to the repair queue and its DLQ', () => {
    expectTlsOnly(template, 'Repair');
  });

  it('maps the repair queue to the repair worker with partial batch responses and bounded concurrency', () => {
    expectEventSource(template, 'Repair', { maxConcurrency: 3, batchSize: 10 });
  });

  it('runs the repair worker in the VPC, with a 1-minute timeout', () => {
    template.hasResourceProperties('AWS::Lambda::Function', {
      Runtime: 'nodejs22.x',
      Timeout: 60,
      VpcConfig: Match.objectLike({
        SecurityGroupIds: [{ 'Fn::GetAtt': [Match.stringLikeRegexp('^Sg'), 'GroupId'] }],
      }),
    });
  });

  it('lets the repair worker read exactly the two database secrets and consume its queue', () => {
    expectWorkerPermissions(template, 'Repair');
  });

  it('grantSend gives the backend sqs:SendMessage on the repair queue only', () => {
    template.hasResourceProperties('AWS::IAM::Policy', {
      Roles: [{ Ref: Match.stringLikeRegexp('^BackendRole') }],
      PolicyDocument: {
        Statement: [{ Effect: 'Allow', Action: 'sqs:SendMessage', Resource: repairQueueArn }],
      },
    });
  });
});

describe('RepairPipeline synth-time checks', () => {
  it('refuses a visibility timeout shorter than 6× the worker timeout, naming field and path', () => {
    expect(() =>
      pipeline({ workerTimeout: Duration.minutes(1), visibilityTimeout: Duration.minutes(2) }),
    ).toThrow(
      /TestStack\/Repair: visibilityTimeout \(120 s\) must be at least 6 × workerTimeout \(60 s\) = 360 s, so a message is not redelivered while a repair worker \(/,
    );
  });

  it('accepts a visibility timeout of exactly 6× the worker timeout', () => {
    expect(() =>
      pipeline({ workerTimeout: Duration.minutes(1), visibilityTimeout: Duration.minutes(6) }),
    ).not.toThrow();
  });

  it('refuses a maximum concurrency below 2 and a batch above 10, naming field and path', () => {
    expect(() => pipeline({ maxConcurrency: 1 })).toThrow(/TestStack\/Repair: maxConcurrency/);
    expect(() => pipeline({ batchSize: 11 })).toThrow(/TestStack\/Repair: batchSize/);
  });
});

/** Stand-ins for the three state machines, so the stack's outputs can be checked. */
const threeStateMachines: MigrationStackProps['stateMachines'] = (stack) => {
  void stack.orchestrator;
  const machine = (name: string) => {
    const m = new sfn.StateMachine(stack, name, {
      definitionBody: sfn.DefinitionBody.fromChainable(new sfn.Pass(stack, `${name}Done`)),
    });
    Validations.of(m).acknowledge(
      { id: 'AwsSolutions-SF1', reason: 'test stand-in for the real state machine' },
      { id: 'AwsSolutions-SF2', reason: 'test stand-in for the real state machine' },
    );
    return m;
  };
  const [migration, cutover, rollback] = ['Migration', 'Cutover', 'Rollback'].map(machine);
  return { migration, cutover, rollback, all: [migration, cutover, rollback] };
};

describe('MigrationStack repair path and outputs', () => {
  let app: App;
  let stack: MigrationStack;
  let template: Template;
  beforeAll(() => {
    app = appWithoutBundling();
    stack = new MigrationStack(app, 'Migration', {
      config: existingConfig({ ssmPrefix: '/prod/iot' }),
      stateMachines: threeStateMachines,
      orchestratorEntry: WORKER_ENTRY,
    });
    const backend = new iam.Role(stack, 'BackendRole', {
      assumedBy: new iam.ServicePrincipal('ecs-tasks.amazonaws.com'),
    });
    stack.repair.grantSend(backend);
    stack.trafficSwitch.grantRead(backend);
    Validations.of(app).addPlugins(new AwsSolutionsChecks(app));
    // Throws when cdk-nag reports a finding that is not acknowledged.
    template = Template.fromStack(stack);
  });

  it('alarms on any message in the repair DLQ', () => {
    template.hasResourceProperties('AWS::CloudWatch::Alarm', {
      Namespace: 'AWS/SQS',
      MetricName: 'ApproximateNumberOfMessagesVisible',
      Dimensions: [
        {
          Name: 'QueueName',
          Value: { 'Fn::GetAtt': [Match.stringLikeRegexp('^RepairDeadLetterQueue'), 'QueueName'] },
        },
      ],
      Threshold: 0,
      ComparisonOperator: 'GreaterThanThreshold',
    });
  });

  it('makes the repair DLQ alarm part of MigrationHealth', () => {
    template.hasResourceProperties('AWS::CloudWatch::CompositeAlarm', {
      AlarmName: 'Migration-MigrationHealth',
      AlarmRule: {
        'Fn::Join': [
          '',
          Match.arrayWith([
            { 'Fn::GetAtt': [Match.stringLikeRegexp('^AlarmsRepairDeadLetterQueueDepth'), 'Arn'] },
          ]),
        ],
      },
    });
  });

  it('lets the backend send only to the repair queue and read only the two switches', () => {
    template.hasResourceProperties('AWS::IAM::Policy', {
      Roles: [{ Ref: Match.stringLikeRegexp('^BackendRole') }],
      PolicyDocument: {
        Statement: Match.arrayWith([
          { Effect: 'Allow', Action: 'sqs:SendMessage', Resource: repairQueueArn },
          Match.objectLike({ Action: ['ssm:GetParameter', 'ssm:GetParameters'] }),
        ]),
      },
    });
  });

  it('outputs the queue URLs, the parameter names and the three state machine ARNs', () => {
    template.hasOutput('RepairQueueUrl', { Value: { Ref: Match.stringLikeRegexp('^RepairQueue') } });
    template.hasOutput('WorkerQueueUrl', { Value: { Ref: Match.stringLikeRegexp('^BackfillQueue') } });
    template.hasOutput('TrafficPercentageParameterName', {
      Value: { Ref: Match.stringLikeRegexp('^TrafficSwitchTrafficPercentage') },
    });
    template.hasOutput('DualWriteParameterName', {
      Value: { Ref: Match.stringLikeRegexp('^TrafficSwitchDualWrite') },
    });
    for (const name of ['Migration', 'Cutover', 'Rollback']) {
      template.hasOutput(`${name}StateMachineArn`, {
        Description: Match.stringLikeRegexp(`${name.toUpperCase()}_STATE_MACHINE_ARN`),
        Value: { Ref: Match.stringLikeRegexp(`^${name}[0-9A-F]{8}$`) },
      });
    }
  });

  it('exposes the repair pipeline', () => {
    expect(stack.repair.worker.function.timeout?.toSeconds()).toBe(60);
  });
});
