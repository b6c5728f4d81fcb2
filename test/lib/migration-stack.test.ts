import { App, Stack, Validations } from 'aws-cdk-lib';
import { Match, Template } from 'aws-cdk-lib/assertions';
import * as sfn from 'aws-cdk-lib/aws-stepfunctions';
import * as sqs from 'aws-cdk-lib/aws-sqs';
import { AwsSolutionsChecks } from 'cdk-nag';
import { existsSync, readdirSync } from 'node:fs';
import { join } from 'node:path';
import { demoStackConfig, type StackConfig } from '../../lib/config';
import { WORKER_ENTRY } from '../../lib/constructs/backfill-pipeline';
import { MigrationStack, type MigrationStackProps } from '../../lib/migration-stack';
import { LAMBDA_ENV } from '../../lib/runtime-contract';
import { appWithoutBundling, existingConfig, testApp, V1_SECRET_ARN, V2_SECRET_ARN } from './helpers';

/** A stack in an app checked by cdk-nag's AwsSolutions pack, as bin/app.ts does. */
function checkedStack(app: App, config: StackConfig, props: Partial<MigrationStackProps> = {}) {
  const stack = new MigrationStack(app, 'Migration', { config, ...props });
  Validations.of(app).addPlugins(new AwsSolutionsChecks(app));
  return stack;
}

/** A stand-in for the state-machine construct that comes later: a Rollback that only passes. */
const dummyStateMachines: MigrationStackProps['stateMachines'] = (stack) => {
  // The real construct will invoke it; asking for it here creates it (with its grants) for the checks.
  void stack.orchestrator;
  const rollback = new sfn.StateMachine(stack, 'Rollback', {
    definitionBody: sfn.DefinitionBody.fromChainable(new sfn.Pass(stack, 'RollbackDone')),
  });
  Validations.of(rollback).acknowledge(
    { id: 'AwsSolutions-SF1', reason: 'test stand-in for the real Rollback state machine' },
    { id: 'AwsSolutions-SF2', reason: 'test stand-in for the real Rollback state machine' },
  );
  return { rollback, all: [rollback] };
};

describe('MigrationStack (demo, bundled: the real synth)', () => {
  let app: App;
  let template: Template;
  beforeAll(() => {
    app = testApp();
    const stack = checkedStack(app, demoStackConfig());
    // Throws when cdk-nag reports a finding that is not acknowledged.
    template = Template.fromStack(stack);
  });

  it('synthesizes with no unacknowledged cdk-nag finding and bundles sql/ next to the worker', () => {
    const assembly = app.synth();
    const assets = readdirSync(assembly.directory).filter((name) => name.startsWith('asset.'));
    const bundled = assets.filter((asset) => existsSync(join(assembly.directory, asset, 'index.js')));

    expect(bundled.length).toBeGreaterThan(0);
    expect(bundled.some((asset) => existsSync(join(assembly.directory, asset, 'sql', 'v2')))).toBe(true);
  });

  it('creates the demo database encrypted, private, with a generated secret', () => {
    template.hasResourceProperties('AWS::RDS::DBInstance', {
      Engine: 'postgres',
      StorageEncrypted: true,
      PubliclyAccessible: false,
      DBName: 'iot',
    });
    template.hasResourceProperties('AWS::SecretsManager::Secret', {
      GenerateSecretString: Match.objectLike({ GenerateStringKey: 'password' }),
    });
  });

  it('passes the demo secret ARN (a reference), not its value, to the worker', () => {
    template.hasResourceProperties('AWS::Lambda::Function', {
      Environment: {
        Variables: Match.objectLike({
          [LAMBDA_ENV.v1SecretArn]: { Ref: Match.stringLikeRegexp('^DemoDatabaseSecretAttachment') },
          [LAMBDA_ENV.v2SecretArn]: { Ref: Match.stringLikeRegexp('^DemoDatabaseSecretAttachment') },
        }),
      },
    });
  });
});

describe('MigrationStack (existing databases)', () => {
  let stack: MigrationStack;
  let template: Template;
  beforeAll(() => {
    stack = checkedStack(appWithoutBundling(), existingConfig({ ssmPrefix: '/prod/iot' }), {
      stateMachines: dummyStateMachines,
      orchestratorEntry: WORKER_ENTRY,
    });
    template = Template.fromStack(stack);
  });

  it('places the worker in the configured subnets and security group', () => {
    template.hasResourceProperties('AWS::Lambda::Function', {
      Runtime: 'nodejs22.x',
      VpcConfig: {
        SecurityGroupIds: ['sg-0123456789abcdef0'],
        SubnetIds: ['subnet-0aaa1111bbbb2222c', 'subnet-0ddd3333eeee4444f'],
      },
    });
  });

  it('holds only non-secret configuration in the Lambda environments', () => {
    for (const fn of Object.values(template.findResources('AWS::Lambda::Function'))) {
      const variables = fn.Properties.Environment.Variables as Record<string, unknown>;
      expect(variables).toMatchObject({
        [LAMBDA_ENV.v1Host]: 'v1.cluster.example.internal',
        [LAMBDA_ENV.v1SecretArn]: V1_SECRET_ARN,
        [LAMBDA_ENV.v2SecretArn]: V2_SECRET_ARN,
        MIGRATION_SSM_PREFIX: '/prod/iot',
      });
      expect(
        Object.keys(variables).filter((name) => /PASSWORD|SECRET(?!_ARN)|DATABASE_URL/.test(name)),
      ).toEqual([]);
    }
  });

  it('outputs what ops need: the dashboard URL, the alarm topic, and the ARNs `npm run migrate` reads', () => {
    template.hasOutput('DashboardUrl', {
      Description: Match.stringLikeRegexp('dashboard'),
      Value: {
        'Fn::Join': [
          '',
          Match.arrayWith([
            'https://',
            { 'Fn::FindInMap': ['ConsoleDomains', { Ref: 'AWS::Partition' }, 'domain'] },
            '#dashboards/dashboard/',
            { Ref: Match.stringLikeRegexp('^Dashboard[0-9A-F]{8}$') },
          ]),
        ],
      },
    });
    expect(template.toJSON().Mappings.ConsoleDomains).toEqual({
      aws: { domain: 'console.aws.amazon.com' },
      'aws-cn': { domain: 'console.amazonaws.cn' },
      'aws-us-gov': { domain: 'console.amazonaws-us-gov.com' },
    });
    template.hasOutput('AlarmTopicArn', {
      Description: Match.stringLikeRegexp('subscribe on-call'),
      Value: { Ref: Match.stringLikeRegexp('^AlarmsTopic') },
    });
    template.hasOutput('RollbackStateMachineArn', {
      Description:
        'ARN of the Rollback state machine: `npm run migrate` reads it from ROLLBACK_STATE_MACHINE_ARN (or --rollback-arn)',
    });
    for (const output of Object.values(
      template.toJSON().Outputs as Record<string, { Description: string }>,
    )) {
      expect(output.Description).not.toMatch(/bin\/ops\.ts/);
    }
  });

  it('routes MigrationHealth to the state machines’ rollback', () => {
    template.hasResourceProperties('AWS::Events::Rule', {
      Targets: [Match.objectLike({ Arn: { Ref: Match.stringLikeRegexp('^Rollback') } })],
    });
  });

  it('exposes what the state machines need', () => {
    expect(stack.workerQueue).toBe(stack.backfill.queue);
    expect(stack.alarmTopic).toBe(stack.alarms.topic);
    expect(stack.trafficSwitch.names.trafficPercentage).toBe('/prod/iot/v2-traffic-percentage');
    expect(stack.orchestrator).toBe(stack.orchestrator);
  });

  it('lets the orchestrator send windows, change the switches, and nothing wider', () => {
    template.hasResourceProperties('AWS::IAM::Policy', {
      Roles: [{ Ref: Match.stringLikeRegexp('^OrchestratorFunction') }],
      PolicyDocument: {
        Statement: Match.arrayWith([
          Match.objectLike({
            Action: Match.arrayWith(['sqs:SendMessage']),
            Resource: { 'Fn::GetAtt': [Match.stringLikeRegexp('^BackfillQueue'), 'Arn'] },
          }),
          Match.objectLike({ Action: ['ssm:GetParameter', 'ssm:GetParameters', 'ssm:PutParameter'] }),
        ]),
      },
    });
  });
});

describe('cdk-nag', () => {
  it('reports a finding that is not acknowledged (a queue without enforceSSL)', () => {
    const app = testApp();
    const stack = new Stack(app, 'Unsafe');
    const dlq = new sqs.Queue(stack, 'Dlq', { enforceSSL: true });
    new sqs.Queue(stack, 'Plain', { deadLetterQueue: { queue: dlq, maxReceiveCount: 3 } });
    Validations.of(app).addPlugins(new AwsSolutionsChecks(app));

    expect(() => Template.fromStack(stack)).toThrow(/AwsSolutions-SQS4/);
  });

  it('reports nothing once that finding is acknowledged next to the construct', () => {
    const app = testApp();
    const stack = new Stack(app, 'Acknowledged');
    const dlq = new sqs.Queue(stack, 'Dlq', { enforceSSL: true });
    const plain = new sqs.Queue(stack, 'Plain', { deadLetterQueue: { queue: dlq, maxReceiveCount: 3 } });
    Validations.of(plain).acknowledge({ id: 'AwsSolutions-SQS4', reason: 'test: acknowledged on purpose' });
    Validations.of(app).addPlugins(new AwsSolutionsChecks(app));

    expect(() => Template.fromStack(stack)).not.toThrow();
  });
});
