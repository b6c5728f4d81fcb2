#!/usr/bin/env node
import { App, Validations } from 'aws-cdk-lib';
import { AwsSolutionsChecks } from 'cdk-nag';
import { ConfigError, MigrationError } from '../lambdas/core/errors';
import { loadStackConfig } from '../lib/config';
import { migrationStateMachines } from '../lib/constructs/state-machines';
import { MigrationStack } from '../lib/migration-stack';

/** The stack's name, unless context `stackName` gives another. */
export const DEFAULT_STACK_NAME = 'IotV2Migration';

/** The lines `cdk synth` shows for a configuration the stack refuses: the named error, no stack trace. */
export function configErrorLines(error: MigrationError): string[] {
  if (!(error instanceof ConfigError)) return [`${error.name}: ${error.message}`];
  return [
    `${error.name}: Invalid ${error.source}:`,
    ...error.issues.map((i) => `  ${i.field}: ${i.problem}`),
  ];
}

try {
  const app = new App();
  const config = loadStackConfig(app.node);
  const stackName = (app.node.tryGetContext('stackName') as string | undefined) ?? DEFAULT_STACK_NAME;
  new MigrationStack(app, stackName, {
    config,
    stateMachines: migrationStateMachines,
    description: 'Zero-downtime migration of the IoT platform PostgreSQL data from V1 to V2',
  });
  // Every finding is an error; each acknowledgement sits next to its construct, with its reason.
  Validations.of(app).addPlugins(new AwsSolutionsChecks(app));
} catch (error) {
  // A refused configuration says what to fix; a stack trace of the CDK app would only hide it.
  if (!(error instanceof MigrationError)) throw error;
  for (const line of configErrorLines(error)) console.error(line);
  process.exit(1);
}
