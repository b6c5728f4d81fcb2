import { Validations } from 'aws-cdk-lib';
import { Match, Template } from 'aws-cdk-lib/assertions';
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { AwsSolutionsChecks } from 'cdk-nag';
import { loadStackConfig } from '../../lib/config';
import { migrationStateMachines } from '../../lib/constructs/state-machines';
import { MigrationStack } from '../../lib/migration-stack';
import { taskEventSchema } from '../../lambdas/core/task-events';
import { appWithoutBundling } from './helpers';

/** The app as bin/app.ts builds it (demo config, no context), without bundling assets. */
function synthApp(): Template {
  const app = appWithoutBundling();
  const stack = new MigrationStack(app, 'IotV2Migration', {
    config: loadStackConfig(app.node),
    stateMachines: migrationStateMachines,
  });
  Validations.of(app).addPlugins(new AwsSolutionsChecks(app));
  // Throws when cdk-nag reports an unacknowledged finding.
  return Template.fromStack(stack);
}

describe('the CDK app with no context (demo config)', () => {
  let template: Template;
  beforeAll(() => {
    template = synthApp();
  });

  it('holds the three state machines, each logging ALL events with X-Ray tracing', () => {
    const machines = template.findResources('AWS::StepFunctions::StateMachine');
    expect(
      Object.keys(machines)
        .map((id) => /(Migration|Cutover|Rollback)StateMachine/.exec(id)?.[1])
        .sort(),
    ).toEqual(['Cutover', 'Migration', 'Rollback']);
    for (const machine of Object.values(machines)) {
      expect(machine.Properties).toMatchObject({
        LoggingConfiguration: { Level: 'ALL', IncludeExecutionData: true },
        TracingConfiguration: { Enabled: true },
      });
    }
  });

  it('holds the worker queue with its DLQ and the two SSM parameters with safe initial values', () => {
    template.hasResourceProperties('AWS::SQS::Queue', {
      RedrivePolicy: Match.objectLike({ maxReceiveCount: 5, deadLetterTargetArn: Match.anyValue() }),
    });
    template.hasResourceProperties('AWS::SSM::Parameter', {
      Name: '/iot-migration/v2-traffic-percentage',
      Value: '0',
    });
    template.hasResourceProperties('AWS::SSM::Parameter', {
      Name: '/iot-migration/dual-write',
      Value: 'off',
    });
  });

  it('rolls back on the composite MigrationHealth alarm through an EventBridge rule targeting Rollback', () => {
    const composite = template.findResources('AWS::CloudWatch::CompositeAlarm');
    expect(Object.keys(composite)).toHaveLength(1);
    const rollbackId = Object.keys(template.findResources('AWS::StepFunctions::StateMachine')).find((id) =>
      id.includes('Rollback'),
    )!;
    template.hasResourceProperties('AWS::Events::Rule', {
      EventPattern: Match.objectLike({
        source: ['aws.cloudwatch'],
        'detail-type': ['CloudWatch Alarm State Change'],
        detail: Match.objectLike({ state: { value: ['ALARM'] } }),
      }),
      Targets: Match.arrayWith([Match.objectLike({ Arn: { Ref: rollbackId } })]),
    });
  });

  it('records a stopped execution’s end and releases its lock: a rule on Execution Status Change targets the orchestrator', () => {
    const machines = Object.keys(template.findResources('AWS::StepFunctions::StateMachine')).sort();
    const rules = Object.values(template.findResources('AWS::Events::Rule')).filter(
      (r) => r.Properties.EventPattern?.source?.[0] === 'aws.states',
    );
    expect(rules).toHaveLength(1);
    const rule = rules[0].Properties;
    expect(rule.EventPattern).toEqual({
      source: ['aws.states'],
      'detail-type': ['Step Functions Execution Status Change'],
      detail: { status: ['ABORTED', 'TIMED_OUT', 'FAILED'], stateMachineArn: expect.any(Array) },
    });
    expect(rule.EventPattern.detail.stateMachineArn.map((r: { Ref: string }) => r.Ref).sort()).toEqual(
      machines,
    );
    const orchestratorId = Object.keys(template.findResources('AWS::Lambda::Function')).find((id) =>
      id.startsWith('Orchestrator'),
    )!;
    const target = rule.Targets[0];
    expect(target.Arn).toEqual({ 'Fn::GetAtt': [orchestratorId, 'Arn'] });
    // What EventBridge sends for a "Stop execution" in the console is a task the orchestrator accepts.
    const event = {
      detail: {
        executionArn: 'arn:aws:states:eu-west-1:123456789012:execution:Migration-x:advance-1',
        stateMachineArn: 'arn:aws:states:eu-west-1:123456789012:stateMachine:Migration-x',
        status: 'ABORTED',
      },
    };
    const { InputPathsMap: paths, InputTemplate: input } = target.InputTransformer as {
      InputPathsMap: Record<string, string>;
      InputTemplate: string;
    };
    const rendered = input.replace(/<([\w-]+)>/g, (_, key: string) => {
      const value = paths[key]
        .replace(/^\$\./, '')
        .split('.')
        .reduce<unknown>((o, k) => (o as never)[k], event);
      return JSON.stringify(value);
    });
    expect(taskEventSchema.parse(JSON.parse(rendered))).toEqual({
      task: 'execution-ended',
      actor: event.detail.executionArn,
      status: 'ABORTED',
      stateMachineArn: event.detail.stateMachineArn,
    });
    template.hasResourceProperties('AWS::Lambda::Permission', {
      Action: 'lambda:InvokeFunction',
      Principal: 'events.amazonaws.com',
      FunctionName: { 'Fn::GetAtt': [orchestratorId, 'Arn'] },
    });
    // Taking the lock describes the holder's execution: only the three machines' executions.
    const describe = Object.values(template.findResources('AWS::IAM::Policy')).flatMap(
      (p) => p.Properties.PolicyDocument.Statement as { Action: string; Resource: unknown[] }[],
    );
    const statements = describe.filter((st) => st.Action === 'states:DescribeExecution');
    expect(statements).toHaveLength(1);
    const named = (statements[0].Resource as { 'Fn::Join': [string, unknown[]] }[]).map((r) => {
      const parts = r['Fn::Join'][1];
      expect(parts).toContain(':execution:');
      expect(parts[parts.length - 1]).toBe(':*');
      return (parts[parts.length - 2] as { 'Fn::GetAtt': [string, string] })['Fn::GetAtt'][0];
    });
    expect(named.sort()).toEqual(machines);
  });

  it('documents every stack output in the README', () => {
    const readme = readFileSync(join(__dirname, '..', '..', 'README.md'), 'utf8');
    const outputs = Object.keys(template.toJSON().Outputs as Record<string, unknown>);
    expect(outputs).toEqual(
      expect.arrayContaining(['DashboardUrl', 'AlarmTopicArn', 'MigrationStateMachineArn']),
    );
    for (const output of outputs)
      expect({ output, documented: readme.includes(`\`${output}\``) }).toEqual({ output, documented: true });
  });

  it('gives the orchestrator the health alarm’s name, and never a secret, in its environment', () => {
    const functions = template.findResources('AWS::Lambda::Function');
    const orchestrator = Object.entries(functions).find(([id]) => id.startsWith('Orchestrator'))![1];
    const env = orchestrator.Properties.Environment.Variables as Record<string, unknown>;
    expect(env.MIGRATION_HEALTH_ALARM).toBeDefined();
    expect(JSON.parse(env.MIGRATION_CUTOVER_SCHEDULE as string)).toEqual([
      { percentage: 10, bakeSeconds: 1800 },
      { percentage: 25, bakeSeconds: 1800 },
      { percentage: 50, bakeSeconds: 1800 },
      { percentage: 100, bakeSeconds: 1800 },
    ]);
    for (const name of Object.keys(env)) {
      expect(name).not.toMatch(/PASSWORD|TOKEN/);
      if (name.includes('SECRET')) expect(name).toMatch(/_SECRET_ARN$/);
    }
  });
});
