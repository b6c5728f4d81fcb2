import { App, Stack } from 'aws-cdk-lib';
import { Template } from 'aws-cdk-lib/assertions';
import * as ec2 from 'aws-cdk-lib/aws-ec2';
import { execFile } from 'node:child_process';
import { existsSync, mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { promisify } from 'node:util';
import { MigrationFunction, PROJECT_ROOT } from '../../lib/constructs/migration-function';
import { LAMBDA_ENV } from '../../lib/runtime-contract';
import { DATABASE_ENVIRONMENT } from './helpers';

describe('MigrationFunction bundling (esbuild, as deployed)', () => {
  const outdir = mkdtempSync(join(tmpdir(), 'cdk.out-bundle-'));
  afterAll(() => rmSync(outdir, { recursive: true, force: true }));

  it("keeps error class names in the minified bundle: the orchestrator's errors reach Step Functions by name", async () => {
    const app = new App({ outdir });
    const stack = new Stack(app, 'BundleStack');
    const vpc = new ec2.Vpc(stack, 'Vpc', { natGateways: 0, maxAzs: 2 });
    new MigrationFunction(stack, 'Orchestrator', {
      entry: join(PROJECT_ROOT, 'lambdas', 'handlers', 'orchestrator.ts'),
      description: 'bundling test',
      vpc,
      vpcSubnets: { subnetType: ec2.SubnetType.PRIVATE_ISOLATED },
      securityGroups: [new ec2.SecurityGroup(stack, 'Sg', { vpc })],
      environment: {
        ...DATABASE_ENVIRONMENT,
      },
    });
    const functions = Template.fromStack(stack).findResources('AWS::Lambda::Function', {
      Properties: { Description: 'bundling test' },
    });
    const [fn] = Object.values(functions) as { Properties: { Code: { S3Key: string } } }[];
    const bundle = join(outdir, `asset.${fn.Properties.Code.S3Key.replace(/\.zip$/, '')}`, 'index.js');
    expect(existsSync(bundle)).toBe(true);
    // The bundle is run as Lambda runs it, without the worker queue's URL in its environment:
    // the task fails with ConfigError, by that name.
    const script = `require(${JSON.stringify(bundle)}).handler({ task: 'status', actor: 'test' }).then(
      () => console.log(JSON.stringify({ ok: true })),
      (e) => console.log(JSON.stringify({ name: e.name, message: e.message })),
    )`;
    const env = { PATH: process.env.PATH, AWS_REGION: 'eu-west-1', POWERTOOLS_LOG_LEVEL: 'SILENT' };
    const { stdout } = await promisify(execFile)(process.execPath, ['-e', script], { env });
    const outcome = JSON.parse(stdout.trim().split('\n').pop() as string) as {
      name?: string;
      message?: string;
    };
    expect(outcome).toEqual({
      name: 'ConfigError',
      message: expect.stringContaining(LAMBDA_ENV.workerQueueUrl),
    });
  }, 300_000);
});
