import { App } from 'aws-cdk-lib';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { loadStackConfig } from './config';
import { migrationStateMachines } from './constructs/state-machines';
import { MigrationStack } from './migration-stack';

/** The three state machines' Amazon States Language definitions, as CDK synthesizes them. */
export interface StateMachineDefinitions {
  migration: Record<string, unknown>;
  cutover: Record<string, unknown>;
  rollback: Record<string, unknown>;
  /** The placeholder ARN each synthesized Lambda or state machine resolved to (by logical id). */
  arns: Record<string, string>;
}

/** A CloudFormation value of a definition string, resolved with placeholder ARNs. */
function resolve(value: unknown, arns: Record<string, string>): string {
  if (typeof value === 'string') return value;
  const v = value as Record<string, unknown>;
  if ('Fn::GetAtt' in v) {
    const [logicalId] = v['Fn::GetAtt'] as [string, string];
    return (arns[logicalId] ??= `arn:aws:lambda:local-1:000000000000:function:${logicalId}`);
  }
  if ('Ref' in v) {
    const ref = v.Ref as string;
    const pseudo: Record<string, string> = {
      'AWS::Partition': 'aws',
      'AWS::Region': 'local-1',
      'AWS::AccountId': '000000000000',
      'AWS::URLSuffix': 'amazonaws.com',
    };
    return pseudo[ref] ?? (arns[ref] ??= `arn:aws:states:local-1:000000000000:stateMachine:${ref}`);
  }
  if ('Fn::Join' in v) {
    const [separator, parts] = v['Fn::Join'] as [string, unknown[]];
    return parts.map((p) => resolve(p, arns)).join(separator);
  }
  throw new Error(`cannot resolve ${JSON.stringify(value)} in a state machine definition`);
}

/**
 * Synthesizes the stack (demo configuration, no asset bundling) and returns the state machine
 * definitions exactly as they would be deployed, with placeholder ARNs in place of the
 * deploy-time tokens. The local rehearsal and the tests execute these. The cloud assembly is
 * written to a temporary folder, removed before this returns.
 */
export function synthesizeDefinitions(): StateMachineDefinitions {
  const outdir = mkdtempSync(join(tmpdir(), 'cdk.out-local-'));
  try {
    return definitionsOf(synthesizeTemplate(outdir));
  } finally {
    rmSync(outdir, { recursive: true, force: true });
  }
}

type Template = { Resources: Record<string, { Type: string; Properties: Record<string, unknown> }> };

function synthesizeTemplate(outdir: string): Template {
  const app = new App({ outdir, context: { 'aws:cdk:bundling-stacks': [] } });
  const stack = new MigrationStack(app, 'LocalRehearsal', {
    config: loadStackConfig(app.node),
    stateMachines: migrationStateMachines,
  });
  return app.synth().getStackByName(stack.stackName).template as Template;
}

function definitionsOf(template: Template): StateMachineDefinitions {
  const arns: Record<string, string> = {};
  const found: Partial<Record<'migration' | 'cutover' | 'rollback', Record<string, unknown>>> = {};
  for (const [logicalId, resource] of Object.entries(template.Resources)) {
    if (resource.Type !== 'AWS::StepFunctions::StateMachine') continue;
    const which = /MigrationStateMachine/.test(logicalId)
      ? 'migration'
      : /CutoverStateMachine/.test(logicalId)
        ? 'cutover'
        : /RollbackStateMachine/.test(logicalId)
          ? 'rollback'
          : undefined;
    if (!which) continue;
    arns[logicalId] = `arn:aws:states:local-1:000000000000:stateMachine:${which}`;
    found[which] = JSON.parse(resolve(resource.Properties.DefinitionString, arns)) as Record<string, unknown>;
  }
  if (!found.migration || !found.cutover || !found.rollback) {
    throw new Error('the synthesized stack lacks one of the Migration, Cutover and Rollback state machines');
  }
  return { migration: found.migration, cutover: found.cutover, rollback: found.rollback, arns };
}
