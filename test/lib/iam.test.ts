import { Validations } from 'aws-cdk-lib';
import { Match, Template } from 'aws-cdk-lib/assertions';
import { AwsSolutionsChecks } from 'cdk-nag';
import { parseStackConfig } from '../../lib/config';
import { migrationStateMachines } from '../../lib/constructs/state-machines';
import { MigrationStack } from '../../lib/migration-stack';
import { LAMBDA_ENV } from '../../lib/runtime-contract';
import { appWithoutBundling, existingConfigInput, V1_SECRET_ARN } from './helpers';

const V1_OWNER_SECRET_ARN = 'arn:aws:secretsmanager:eu-west-1:123456789012:secret:iot/v1-owner-MnOpQr';

/** The real app (real state machines) on existing databases, with V1's owner secret, checked by cdk-nag. */
function synth(): Template {
  const app = appWithoutBundling();
  const base = existingConfigInput();
  const stack = new MigrationStack(app, 'IotV2Migration', {
    config: parseStackConfig({
      ...base,
      v1: { ...base.v1!, ownerSecretArn: V1_OWNER_SECRET_ARN },
    }),
    stateMachines: migrationStateMachines,
  });
  Validations.of(app).addPlugins(new AwsSolutionsChecks(app));
  // Throws when cdk-nag reports a finding that is not acknowledged.
  return Template.fromStack(stack);
}

interface Statement {
  Effect: string;
  Action: string | string[];
  Resource: unknown;
}

/** Every statement of every policy in the template: inline policies, role policies, managed policies. */
function statements(template: Template): { owner: string; statement: Statement }[] {
  const found: { owner: string; statement: Statement }[] = [];
  const add = (owner: string, document: { Statement: Statement[] } | undefined) => {
    for (const statement of document?.Statement ?? []) found.push({ owner, statement });
  };
  for (const [id, r] of Object.entries(template.findResources('AWS::IAM::Policy')))
    add(id, r.Properties.PolicyDocument);
  for (const [id, r] of Object.entries(template.findResources('AWS::IAM::ManagedPolicy')))
    add(id, r.Properties.PolicyDocument);
  for (const [id, r] of Object.entries(template.findResources('AWS::IAM::Role'))) {
    for (const p of (r.Properties.Policies ?? []) as { PolicyDocument: { Statement: Statement[] } }[])
      add(id, p.PolicyDocument);
  }
  return found;
}

const actionsOf = (s: Statement) => (Array.isArray(s.Action) ? s.Action : [s.Action]);
const resourcesOf = (s: Statement) => (Array.isArray(s.Resource) ? s.Resource : [s.Resource]);

/** The only actions allowed on `*`: they support no resource-level permission. */
const STAR_ACTIONS = new Set([
  // X-Ray tracing of the functions and state machines.
  'xray:PutTraceSegments',
  'xray:PutTelemetryRecords',
  'xray:GetSamplingRules',
  'xray:GetSamplingTargets',
  // Step Functions' delivery of execution logs to CloudWatch Logs.
  'logs:CreateLogDelivery',
  'logs:GetLogDelivery',
  'logs:UpdateLogDelivery',
  'logs:DeleteLogDelivery',
  'logs:ListLogDeliveries',
  'logs:PutResourcePolicy',
  'logs:DescribeResourcePolicies',
  'logs:DescribeLogGroups',
  // The health gate reads the composite alarm (DescribeAlarms returns composites only on `*`).
  'cloudwatch:DescribeAlarms',
]);

describe('IAM statements of the synthesized stack', () => {
  let template: Template;
  beforeAll(() => {
    template = synth();
  });

  it('grant no action wildcard', () => {
    const all = statements(template);
    expect(all.length).toBeGreaterThan(10);
    const wildcards = all.flatMap(({ owner, statement }) =>
      actionsOf(statement)
        .filter((action) => action.includes('*'))
        .map((action) => `${owner}: ${action}`),
    );
    expect(wildcards).toEqual([]);
  });

  it('use `*` resources only for X-Ray, log delivery and DescribeAlarms', () => {
    const onStar = statements(template).filter(({ statement }) => resourcesOf(statement).includes('*'));
    expect(onStar.length).toBeGreaterThan(0);
    const others = onStar.flatMap(({ owner, statement }) =>
      actionsOf(statement)
        .filter((action) => !STAR_ACTIONS.has(action))
        .map((action) => `${owner}: ${action}`),
    );
    expect(others).toEqual([]);
    // DescribeAlarms is the orchestrator's alone.
    const describeAlarms = onStar.filter(({ statement }) =>
      actionsOf(statement).includes('cloudwatch:DescribeAlarms'),
    );
    expect(describeAlarms.map(({ owner }) => owner)).toEqual([expect.stringMatching(/^Orchestrator/)]);
  });

  it('attach no AWS managed policy but the ENI one (no AWSLambdaBasicExecutionRole on every log group)', () => {
    const managed = Object.values(template.findResources('AWS::IAM::Role')).flatMap(
      (r) => (r.Properties.ManagedPolicyArns ?? []) as unknown[],
    );
    expect(managed.length).toBeGreaterThan(0);
    for (const arn of managed)
      expect(JSON.stringify(arn)).toContain('service-role/AWSLambdaENIManagementAccess');
  });

  it('let each function write logs only to its own log group', () => {
    const policies = template.findResources('AWS::IAM::Policy');
    const functions = Object.values(template.findResources('AWS::Lambda::Function'));
    expect(functions.length).toBeGreaterThanOrEqual(2);
    for (const fn of functions) {
      const role = (fn.Properties.Role as { 'Fn::GetAtt': [string, string] })['Fn::GetAtt'][0];
      const logGroup = (fn.Properties.LoggingConfig.LogGroup as { Ref: string }).Ref;
      expect(template.toJSON().Resources[logGroup].Type).toBe('AWS::Logs::LogGroup');
      const logStatements = Object.values(policies)
        .filter((p) => (p.Properties.Roles as { Ref: string }[]).some((r) => r.Ref === role))
        .flatMap((p) => (p.Properties.PolicyDocument as { Statement: Statement[] }).Statement)
        .filter((st) => actionsOf(st).some((a) => a.startsWith('logs:')));
      expect(logStatements.map((st) => ({ actions: actionsOf(st), resources: resourcesOf(st) }))).toEqual([
        {
          actions: ['logs:CreateLogStream', 'logs:PutLogEvents'],
          resources: [{ 'Fn::GetAtt': [logGroup, 'Arn'] }],
        },
      ]);
    }
  });

  it('let only the orchestrator read V1’s owner secret, and pass its ARN to it alone', () => {
    const readers = statements(template).filter(({ statement }) =>
      JSON.stringify(statement.Resource).includes('iot/v1-owner'),
    );
    expect(readers.map(({ owner }) => owner)).toEqual([expect.stringMatching(/^Orchestrator/)]);
    expect(actionsOf(readers[0].statement)).toEqual(
      expect.arrayContaining(['secretsmanager:GetSecretValue']),
    );
    const functions = Object.entries(template.findResources('AWS::Lambda::Function'));
    const withOwner = functions.filter(
      ([, fn]) => fn.Properties.Environment?.Variables?.[LAMBDA_ENV.v1OwnerSecretArn] !== undefined,
    );
    expect(withOwner.map(([id]) => id)).toEqual([expect.stringMatching(/^Orchestrator/)]);
    expect(withOwner[0][1].Properties.Environment.Variables[LAMBDA_ENV.v1OwnerSecretArn]).toBe(
      V1_OWNER_SECRET_ARN,
    );
    // The read-only secret is what every function gets as V1's.
    for (const [, fn] of functions) {
      if (fn.Properties.Environment?.Variables?.[LAMBDA_ENV.v1SecretArn] !== undefined)
        expect(fn.Properties.Environment.Variables[LAMBDA_ENV.v1SecretArn]).toBe(V1_SECRET_ARN);
    }
  });

  it('give the backfill DLQ to the orchestrator alone (redrive reads and deletes it), and no DLQ to any other function', () => {
    const dlqGrants = statements(template)
      .filter(({ statement }) =>
        actionsOf(statement).some((a) => a === 'sqs:ReceiveMessage' || a === 'sqs:DeleteMessage'),
      )
      .filter(({ statement }) => /DeadLetter|Dlq/i.test(JSON.stringify(statement.Resource)));
    expect(dlqGrants.map(({ owner }) => owner)).toEqual([expect.stringMatching(/^Orchestrator/)]);
    const resource = JSON.stringify(dlqGrants[0].statement.Resource);
    expect(resource).toMatch(/DeadLetter/);
    expect(resource).not.toMatch(/Repair/i);
    expect(resourcesOf(dlqGrants[0].statement)).toHaveLength(1);
  });

  it('offer an ops managed policy that may start and follow the three state machines, and nothing else', () => {
    const ops = Object.entries(template.findResources('AWS::IAM::ManagedPolicy')).filter(([id]) =>
      id.startsWith('Ops'),
    );
    expect(ops).toHaveLength(1);
    const document = ops[0][1].Properties.PolicyDocument as { Statement: Statement[] };
    const actions = document.Statement.flatMap(actionsOf).sort();
    expect(actions).toEqual(
      [
        'states:DescribeExecution',
        'states:DescribeStateMachine',
        'states:GetExecutionHistory',
        'states:ListExecutions',
        'states:StartExecution',
        'states:StopExecution',
      ].sort(),
    );
    const start = document.Statement.find((s) => actionsOf(s).includes('states:StartExecution'))!;
    expect(resourcesOf(start)).toHaveLength(3);
    for (const resource of resourcesOf(start)) {
      expect(resource).toEqual({ Ref: expect.stringMatching(/(Migration|Cutover|Rollback)StateMachine/) });
    }
    template.hasOutput('OpsPolicyArn', { Value: { Ref: Match.stringLikeRegexp('^OpsPolicy') } });
  });
});
