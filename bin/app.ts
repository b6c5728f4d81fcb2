#!/usr/bin/env node
import { App, Validations } from 'aws-cdk-lib';
import { AwsSolutionsChecks } from 'cdk-nag';
import { loadStackConfig } from '../lib/config';
import { migrationStateMachines } from '../lib/constructs/state-machines';
import { MigrationStack } from '../lib/migration-stack';

/** The stack's name, unless context `stackName` gives another. */
export const DEFAULT_STACK_NAME = 'IotV2Migration';

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
