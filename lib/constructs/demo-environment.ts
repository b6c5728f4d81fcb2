import { Duration, RemovalPolicy, Validations } from 'aws-cdk-lib';
import * as ec2 from 'aws-cdk-lib/aws-ec2';
import * as logs from 'aws-cdk-lib/aws-logs';
import * as rds from 'aws-cdk-lib/aws-rds';
import type * as secretsmanager from 'aws-cdk-lib/aws-secretsmanager';
import { Construct } from 'constructs';
import { DEMO_DATABASE_NAME } from '../config';

/** The demo database's engine: PostgreSQL 17 (the latest minor is applied by RDS). */
export const DEMO_ENGINE_VERSION = rds.PostgresEngineVersion.VER_17;
/** The demo database's size: the smallest Graviton instance. */
export const DEMO_INSTANCE_TYPE = ec2.InstanceType.of(ec2.InstanceClass.T4G, ec2.InstanceSize.MICRO);
/** The demo database's master user (its password is generated into Secrets Manager). */
export const DEMO_MASTER_USER = 'migration_admin';
/** The PostgreSQL port. */
export const POSTGRES_PORT = 5432;

/** Props of DemoEnvironment. */
export interface DemoEnvironmentProps {
  /**
   * Availability zones of the VPC.
   * @default 2
   */
  readonly maxAzs?: number;
}

/**
 * What `demo: true` deploys so the stack can run without an existing platform: a VPC with
 * isolated subnets only (no internet; AWS APIs through interface endpoints), flow logs, a
 * security group for the migration Lambdas, and one small encrypted RDS PostgreSQL instance
 * with a generated Secrets Manager secret, holding V1 and V2 (in separate schemas).
 * It is for trying the tool out: single-AZ and deletable.
 */
export class DemoEnvironment extends Construct {
  public readonly vpc: ec2.Vpc;
  /** The subnets of the Lambdas and the database. */
  public readonly subnets: ec2.SubnetSelection = { subnetType: ec2.SubnetType.PRIVATE_ISOLATED };
  /** The migration Lambdas' security group: allowed into the database and the endpoints. */
  public readonly lambdaSecurityGroup: ec2.SecurityGroup;
  public readonly databaseSecurityGroup: ec2.SecurityGroup;
  public readonly database: rds.DatabaseInstance;
  /** The database's generated credentials (RDS secret JSON). */
  public readonly secret: secretsmanager.ISecret;

  constructor(scope: Construct, id: string, props: DemoEnvironmentProps = {}) {
    super(scope, id);
    const flowLogs = new logs.LogGroup(this, 'FlowLogs', {
      retention: logs.RetentionDays.ONE_MONTH,
      removalPolicy: RemovalPolicy.DESTROY,
    });
    this.vpc = new ec2.Vpc(this, 'Vpc', {
      maxAzs: props.maxAzs ?? 2,
      natGateways: 0,
      subnetConfiguration: [{ name: 'isolated', subnetType: ec2.SubnetType.PRIVATE_ISOLATED, cidrMask: 24 }],
      flowLogs: { all: { destination: ec2.FlowLogDestination.toCloudWatchLogs(flowLogs) } },
    });

    this.lambdaSecurityGroup = new ec2.SecurityGroup(this, 'LambdaSecurityGroup', {
      vpc: this.vpc,
      description: 'Migration Lambdas: to the database and the AWS API endpoints only',
      allowAllOutbound: false,
    });
    this.databaseSecurityGroup = new ec2.SecurityGroup(this, 'DatabaseSecurityGroup', {
      vpc: this.vpc,
      description: 'Demo PostgreSQL: from the migration Lambdas only',
      allowAllOutbound: false,
    });
    this.databaseSecurityGroup.addIngressRule(
      this.lambdaSecurityGroup,
      ec2.Port.tcp(POSTGRES_PORT),
      'PostgreSQL from the migration Lambdas',
    );
    this.lambdaSecurityGroup.addEgressRule(
      this.databaseSecurityGroup,
      ec2.Port.tcp(POSTGRES_PORT),
      'PostgreSQL to the demo database',
    );
    this.lambdaSecurityGroup.addEgressRule(
      ec2.Peer.ipv4(this.vpc.vpcCidrBlock),
      ec2.Port.tcp(443),
      'HTTPS to the VPC interface endpoints',
    );

    const services = {
      SecretsManager: ec2.InterfaceVpcEndpointAwsService.SECRETS_MANAGER,
      Ssm: ec2.InterfaceVpcEndpointAwsService.SSM,
      Sqs: ec2.InterfaceVpcEndpointAwsService.SQS,
      Rds: ec2.InterfaceVpcEndpointAwsService.RDS,
      CloudWatch: ec2.InterfaceVpcEndpointAwsService.CLOUDWATCH_MONITORING,
    };
    for (const [name, service] of Object.entries(services)) {
      const endpoint = this.vpc.addInterfaceEndpoint(name, {
        service,
        subnets: this.subnets,
        privateDnsEnabled: true,
      });
      Validations.of(endpoint).acknowledge({
        id: 'AwsSolutions-EC23',
        reason:
          'The endpoint security group admits HTTPS from the VPC CIDR only (an intrinsic, which the rule ' +
          'cannot evaluate); the VPC has no internet route',
      });
    }

    this.database = new rds.DatabaseInstance(this, 'Database', {
      engine: rds.DatabaseInstanceEngine.postgres({ version: DEMO_ENGINE_VERSION }),
      instanceType: DEMO_INSTANCE_TYPE,
      vpc: this.vpc,
      vpcSubnets: this.subnets,
      securityGroups: [this.databaseSecurityGroup],
      credentials: rds.Credentials.fromGeneratedSecret(DEMO_MASTER_USER),
      databaseName: DEMO_DATABASE_NAME,
      port: POSTGRES_PORT,
      storageEncrypted: true,
      allocatedStorage: 20,
      maxAllocatedStorage: 100,
      backupRetention: Duration.days(1),
      multiAz: false,
      deletionProtection: false,
      removalPolicy: RemovalPolicy.SNAPSHOT,
      iamAuthentication: false,
      autoMinorVersionUpgrade: true,
      publiclyAccessible: false,
    });
    this.secret = this.database.secret!;

    const demoOnly = 'The demo database exists to try the migration out and is deleted afterwards';
    Validations.of(this.database).acknowledge(
      { id: 'AwsSolutions-RDS3', reason: `${demoOnly}; a standby would double its cost for no benefit` },
      { id: 'AwsSolutions-RDS10', reason: `${demoOnly}; deletion protection would block cdk destroy` },
      {
        id: 'AwsSolutions-RDS11',
        reason:
          'A non-default port is obscurity, not a control: the database is in isolated subnets and ' +
          'only the migration Lambdas security group may reach it',
      },
    );
    // The secret resource sits under the instance (instance.secret is its target attachment).
    Validations.of(this.database).acknowledge({
      id: 'AwsSolutions-SMG4',
      reason:
        `${demoOnly}, so a rotation schedule (and its rotation Lambda) is not worth adding; the Lambdas would ` +
        'survive one (they fetch the secret again when the password is refused); production databases bring ' +
        'their own secrets and rotation',
    });
  }
}
