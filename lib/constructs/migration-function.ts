import { Duration, RemovalPolicy, Token, Validations } from 'aws-cdk-lib';
import type * as ec2 from 'aws-cdk-lib/aws-ec2';
import * as iam from 'aws-cdk-lib/aws-iam';
import * as lambda from 'aws-cdk-lib/aws-lambda';
import * as nodejs from 'aws-cdk-lib/aws-lambda-nodejs';
import * as logs from 'aws-cdk-lib/aws-logs';
import { Construct } from 'constructs';
import { join } from 'node:path';
import { configFromLambdaEnvironment } from '../../lambdas/core/config';
import { LAMBDA_ENV } from '../runtime-contract';

/** The repository root: where package-lock.json, lambdas/ and sql/ are. */
export const PROJECT_ROOT = join(__dirname, '..', '..');
/** The folder of SQL files bundled next to the code (read by lambdas/core/migrator.ts). */
export const SQL_SOURCE_DIR = 'sql';
/** Where Lambda unpacks the bundle (LAMBDA_TASK_ROOT), so where `sql/` ends up. */
export const LAMBDA_TASK_ROOT = '/var/task';
/** Node.js 22: the newest Lambda runtime for Node.js (cdk-nag AwsSolutions-L1). */
export const DEFAULT_RUNTIME = lambda.Runtime.NODEJS_22_X;
/** ARM64 (Graviton): cheaper per GB-second and as fast for this I/O-bound work. */
export const DEFAULT_ARCHITECTURE = lambda.Architecture.ARM_64;
/** @see MigrationFunctionProps.timeout */
export const DEFAULT_FUNCTION_TIMEOUT = Duration.minutes(5);
/** @see MigrationFunctionProps.memorySize */
export const DEFAULT_FUNCTION_MEMORY_MB = 1024;
/** @see MigrationFunctionProps.logRetention */
export const DEFAULT_LOG_RETENTION = logs.RetentionDays.THREE_MONTHS;
/**
 * The AWS managed policy that lets Lambda attach a function to the VPC: exactly the EC2
 * network-interface actions (create, describe, delete, assign and unassign private IPs), and
 * unlike AWSLambdaVPCAccessExecutionRole no CloudWatch Logs rights on every log group.
 */
export const ENI_MANAGEMENT_POLICY = 'service-role/AWSLambdaENIManagementAccess';

/**
 * The Lambda runtime's CA bundle, which includes the RDS certificate authorities: Node.js 20+
 * runtimes no longer load it by default, and the pools verify the database's certificate.
 */
export const LAMBDA_CA_BUNDLE = '/var/runtime/ca-cert.pem';

/** Props of a MigrationFunction. */
export interface MigrationFunctionProps {
  /** The handler file (TypeScript), e.g. `lambdas/handlers/backfill-worker.ts` under PROJECT_ROOT. */
  readonly entry: string;
  /** What the function does (shown in the console). */
  readonly description: string;
  /** The VPC in which the function reaches the databases. */
  readonly vpc: ec2.IVpc;
  /** The subnets of the function's network interfaces. */
  readonly vpcSubnets: ec2.SubnetSelection;
  /** The security groups of the function's network interfaces (allowed into the databases). */
  readonly securityGroups: readonly ec2.ISecurityGroup[];
  /**
   * Non-secret configuration only: hosts, ports, database names, secret ARNs, schema names.
   * Checked at synth time: a name that looks like a password or a secret value is refused.
   */
  readonly environment: Readonly<Record<string, string>>;
  /**
   * The function's timeout.
   * @default DEFAULT_FUNCTION_TIMEOUT (5 minutes)
   */
  readonly timeout?: Duration;
  /**
   * Memory in MB (CPU grows with it; COPY streaming and JSON mapping use both).
   * @default DEFAULT_FUNCTION_MEMORY_MB (1024)
   */
  readonly memorySize?: number;
  /**
   * How long the function's log group keeps its logs.
   * @default DEFAULT_LOG_RETENTION (three months)
   */
  readonly logRetention?: logs.RetentionDays;
}

/**
 * What the run-time parser sees at synth in place of a value CloudFormation fills in at deploy
 * time (a database endpoint or a secret ARN of a resource in the stack): such a value is right by
 * construction, so a placeholder of its kind stands in for it. A deploy-time value in any other
 * variable the parser reads is not replaced, and the check refuses it.
 */
const DEPLOY_TIME_PLACEHOLDERS: Record<string, string> = {
  [LAMBDA_ENV.v1Host]: 'deploy-time.invalid',
  [LAMBDA_ENV.v2Host]: 'deploy-time.invalid',
  [LAMBDA_ENV.v1Port]: '5432',
  [LAMBDA_ENV.v2Port]: '5432',
  [LAMBDA_ENV.v1Database]: 'deploy_time',
  [LAMBDA_ENV.v2Database]: 'deploy_time',
  [LAMBDA_ENV.v1SecretArn]: 'arn:aws:secretsmanager:deploy-time:000000000000:secret:deploy-time',
  [LAMBDA_ENV.v2SecretArn]: 'arn:aws:secretsmanager:deploy-time:000000000000:secret:deploy-time',
  [LAMBDA_ENV.rdsInstanceId]: 'deploy-time',
  [LAMBDA_ENV.auroraClusterId]: 'deploy-time',
};

/**
 * Checks a function's exact environment with the parser the Lambdas run at cold start
 * (lambdas/core/config.ts); throws its ConfigError, naming the construct and each variable.
 */
export function checkLambdaEnvironment(path: string, environment: Readonly<Record<string, string>>): void {
  const resolved = Object.fromEntries(
    Object.entries(environment).map(([name, value]) => [
      name,
      Token.isUnresolved(value) ? (DEPLOY_TIME_PLACEHOLDERS[name] ?? value) : value,
    ]),
  );
  configFromLambdaEnvironment(
    resolved,
    `Lambda environment of ${path} (the Lambdas would refuse it at cold start)`,
  );
}

/** Environment variable names that must never be set on a function (they would carry secrets). */
const SECRET_LIKE_NAME = /PASSWORD|PASSWD|TOKEN|PRIVATE_KEY|DATABASE_URL|SECRET(?!_ARN$)/i;

/**
 * The one way this project makes a Lambda function, so every function has the same defaults:
 *
 * - runtime Node.js 22 (DEFAULT_RUNTIME) on ARM64 (DEFAULT_ARCHITECTURE);
 * - X-Ray tracing active;
 * - timeout DEFAULT_FUNCTION_TIMEOUT, memory DEFAULT_FUNCTION_MEMORY_MB;
 * - its own log group with DEFAULT_LOG_RETENTION, destroyed with the stack, and its own role
 *   that may write to that log group only (no AWSLambdaBasicExecutionRole, whose rights cover
 *   every log group) and manage the VPC network interfaces (ENI_MANAGEMENT_POLICY);
 * - esbuild bundling done locally (never Docker), minified but keeping names (an error's `name`
 *   is its class name, which the state machines' Retry and Catch match), with source maps enabled
 *   at runtime (`--enable-source-maps`), the AWS SDK bundled so its version is the one tested;
 * - the `sql/` folder copied next to the bundle, and MIGRATION_SQL_DIR pointing at it;
 * - in the given VPC subnets with the given security groups;
 * - the runtime CA bundle trusted (NODE_EXTRA_CA_CERTS), so TLS to RDS is verified;
 * - environment variables for non-secret configuration only, checked at synth by the run-time
 *   configuration parser (a value the Lambdas would refuse fails `cdk synth` with ConfigError).
 */
export class MigrationFunction extends Construct {
  /** The function. */
  public readonly function: nodejs.NodejsFunction;
  /** The function's log group. */
  public readonly logGroup: logs.LogGroup;
  /** The function's execution role (grants add to it). */
  public readonly role: iam.Role;

  constructor(scope: Construct, id: string, props: MigrationFunctionProps) {
    super(scope, id);
    for (const name of Object.keys(props.environment)) {
      if (SECRET_LIKE_NAME.test(name)) {
        throw new Error(
          `${this.node.path}: environment.${name} looks like a secret; pass a Secrets Manager ARN ` +
            '(…_SECRET_ARN) instead, never a secret value',
        );
      }
    }
    checkLambdaEnvironment(this.node.path, props.environment);
    const memorySize = props.memorySize ?? DEFAULT_FUNCTION_MEMORY_MB;
    if (!Number.isInteger(memorySize) || memorySize < 128 || memorySize > 10_240) {
      throw new Error(
        `${this.node.path}: memorySize must be an integer from 128 to 10240 (got ${memorySize})`,
      );
    }

    this.logGroup = new logs.LogGroup(this, 'Logs', {
      retention: props.logRetention ?? DEFAULT_LOG_RETENTION,
      removalPolicy: RemovalPolicy.DESTROY,
    });

    this.role = new iam.Role(this, 'Role', {
      assumedBy: new iam.ServicePrincipal('lambda.amazonaws.com'),
      // IAM descriptions take Latin-1 only (CloudFormation rejects an arrow).
      description: `Execution role: ${props.description}`
        .replace(/→/g, '->')
        .replace(/[^\t\n\r\x20-\x7E\xA1-\xFF]/g, '-'),
      managedPolicies: [iam.ManagedPolicy.fromAwsManagedPolicyName(ENI_MANAGEMENT_POLICY)],
    });
    // Its own log group only: the group exists (created above), so no logs:CreateLogGroup.
    this.role.addToPolicy(
      new iam.PolicyStatement({
        actions: ['logs:CreateLogStream', 'logs:PutLogEvents'],
        resources: [this.logGroup.logGroupArn],
      }),
    );

    this.function = new nodejs.NodejsFunction(this, 'Function', {
      entry: props.entry,
      role: this.role,
      handler: 'handler',
      description: props.description,
      runtime: DEFAULT_RUNTIME,
      architecture: DEFAULT_ARCHITECTURE,
      tracing: lambda.Tracing.ACTIVE,
      timeout: props.timeout ?? DEFAULT_FUNCTION_TIMEOUT,
      memorySize,
      logGroup: this.logGroup,
      vpc: props.vpc,
      vpcSubnets: props.vpcSubnets,
      securityGroups: [...props.securityGroups],
      projectRoot: PROJECT_ROOT,
      depsLockFilePath: join(PROJECT_ROOT, 'package-lock.json'),
      environment: {
        ...props.environment,
        [LAMBDA_ENV.sqlDir]: `${LAMBDA_TASK_ROOT}/${SQL_SOURCE_DIR}`,
        NODE_OPTIONS: '--enable-source-maps',
        NODE_EXTRA_CA_CERTS: LAMBDA_CA_BUNDLE,
      },
      bundling: {
        forceDockerBundling: false,
        minify: true,
        // Error class names survive minification: Step Functions' Retry and Catch match them.
        keepNames: true,
        sourceMap: true,
        target: 'node22',
        format: nodejs.OutputFormat.CJS,
        // The SDK is bundled (not taken from the runtime) so the version that runs is the tested one;
        // pg's optional native binding is never used.
        externalModules: ['pg-native'],
        commandHooks: {
          beforeBundling: () => [],
          beforeInstall: () => [],
          afterBundling: (inputDir: string, outputDir: string) => [
            `cp -R "${join(inputDir, SQL_SOURCE_DIR)}" "${join(outputDir, SQL_SOURCE_DIR)}"`,
          ],
        },
      },
    });

    // On the construct: the findings are on the function and on its role beside it.
    Validations.of(this).acknowledge(
      {
        id: 'AwsSolutions-L1',
        reason:
          'Node.js 22 is the runtime this project targets and tests (LTS, supported by Lambda); moving to a ' +
          'newer runtime is a deliberate upgrade, not a drift',
      },
      {
        id: `AwsSolutions-IAM4[Policy::arn:<AWS::Partition>:iam::aws:policy/${ENI_MANAGEMENT_POLICY}]`,
        reason:
          'Holds only the EC2 network-interface actions Lambda uses to attach a VPC function (create, describe, ' +
          'delete, assign and unassign private IPs; the databases are only reachable in the VPC) and no logs ' +
          'rights; the describe actions only work on all resources, and Lambda creates the ENIs with ids not ' +
          'known at deploy time',
      },
      {
        id: 'AwsSolutions-IAM5[Resource::*]',
        reason:
          'Added by tracing: Active: xray:PutTraceSegments and xray:PutTelemetryRecords support no ' +
          'resource-level permissions (https://docs.aws.amazon.com/xray/latest/devguide/security_iam_id-based-policy-examples.html)',
      },
    );
  }
}
