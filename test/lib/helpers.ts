import { App, type AppProps, Stack } from 'aws-cdk-lib';
import * as ec2 from 'aws-cdk-lib/aws-ec2';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { parseStackConfig, type StackConfigInput } from '../../lib/config';
import { LAMBDA_ENV } from '../../lib/runtime-contract';

const outdirs: string[] = [];
// Each test file that makes apps removes their cloud assemblies (an App without `outdir` would
// leave a cdk.out* folder in the temp directory for every synth).
afterAll(() => {
  for (const dir of outdirs.splice(0)) rmSync(dir, { recursive: true, force: true });
});

/** An app whose cloud assembly goes to a temporary folder removed after the test file. */
export function testApp(props: AppProps = {}): App {
  const outdir = mkdtempSync(join(tmpdir(), 'cdk.out-test-'));
  outdirs.push(outdir);
  return new App({ ...props, outdir });
}

/** An app that skips asset bundling (esbuild), for fast assertion tests. */
export const appWithoutBundling = () => testApp({ context: { 'aws:cdk:bundling-stacks': [] } });

export const V1_SECRET_ARN = 'arn:aws:secretsmanager:eu-west-1:123456789012:secret:iot/v1-AbCdEf';
export const V2_SECRET_ARN = 'arn:aws:secretsmanager:eu-west-1:123456789012:secret:iot/v2-GhIjKl';

/** The databases part of a Lambda's environment, as a stack gives it (hosts, names, secret ARNs). */
export const DATABASE_ENVIRONMENT: Readonly<Record<string, string>> = {
  [LAMBDA_ENV.v1Host]: 'v1.example.internal',
  [LAMBDA_ENV.v1Database]: 'iot',
  [LAMBDA_ENV.v1SecretArn]: V1_SECRET_ARN,
  [LAMBDA_ENV.v2Host]: 'v2.example.internal',
  [LAMBDA_ENV.v2Database]: 'iot_v2',
  [LAMBDA_ENV.v2SecretArn]: V2_SECRET_ARN,
};

/** A valid configuration for existing databases and network; `overrides` replace top-level fields. */
export function existingConfigInput(overrides: Partial<StackConfigInput> = {}): StackConfigInput {
  return {
    vpcId: 'vpc-0123456789abcdef0',
    subnetIds: ['subnet-0aaa1111bbbb2222c', 'subnet-0ddd3333eeee4444f'],
    securityGroupId: 'sg-0123456789abcdef0',
    v1: { host: 'v1.cluster.example.internal', port: 5432, database: 'iot', secretArn: V1_SECRET_ARN },
    v2: {
      host: 'v2.cluster.example.internal',
      port: 5432,
      database: 'iot_v2',
      secretArn: V2_SECRET_ARN,
      rdsInstanceId: 'iot-v2',
    },
    snapshot: { rdsInstanceId: 'iot-v1' },
    ...overrides,
  };
}

export const existingConfig = (overrides: Partial<StackConfigInput> = {}) =>
  parseStackConfig(existingConfigInput(overrides));

/** A stack with a VPC and a security group, for testing one construct. */
export function networkStack(app = appWithoutBundling()) {
  const stack = new Stack(app, 'TestStack');
  const vpc = new ec2.Vpc(stack, 'Vpc', { natGateways: 0, maxAzs: 2 });
  const securityGroup = new ec2.SecurityGroup(stack, 'Sg', { vpc });
  return { app, stack, vpc, securityGroup, vpcSubnets: { subnetType: ec2.SubnetType.PRIVATE_ISOLATED } };
}
