-- V2: the multi-tenant schema. Every table but tenants carries tenant_id. Applied with
-- search_path set to the configured V2 schema. The telemetry table is created separately by
-- the storage variant chosen at prepare time (sql/storage/). Text ids use the "C" collation
-- (byte order), so key windows mean the same rows on V1 and V2 whatever their collations.
CREATE TABLE tenants (
  id text PRIMARY KEY,
  name text NOT NULL,
  slug text NOT NULL UNIQUE,
  plan text NOT NULL,
  status text NOT NULL,
  created_at timestamptz NOT NULL DEFAULT now(),
  updated_at timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE users (
  id text COLLATE "C" PRIMARY KEY,
  tenant_id text NOT NULL REFERENCES tenants(id),
  email text NOT NULL,
  name text,
  password_hash text NOT NULL,
  role text NOT NULL DEFAULT 'VIEWER' CHECK (role IN ('ADMIN', 'OPERATOR', 'VIEWER')),
  created_at timestamptz NOT NULL DEFAULT now(),
  updated_at timestamptz NOT NULL,
  UNIQUE (tenant_id, email)
);

CREATE TABLE device_templates (
  id text PRIMARY KEY,
  tenant_id text NOT NULL REFERENCES tenants(id),
  device_type text NOT NULL,
  name text NOT NULL,
  description text,
  created_at timestamptz NOT NULL DEFAULT now(),
  updated_at timestamptz NOT NULL DEFAULT now(),
  UNIQUE (tenant_id, device_type)
);

CREATE TABLE devices (
  id text COLLATE "C" PRIMARY KEY,
  tenant_id text NOT NULL REFERENCES tenants(id),
  template_id text NOT NULL REFERENCES device_templates(id),
  name text NOT NULL,
  status text NOT NULL DEFAULT 'OFFLINE',
  attributes jsonb NOT NULL DEFAULT '{}',
  metadata jsonb NOT NULL DEFAULT '{}',
  owner_id text REFERENCES users(id) ON DELETE SET NULL,
  last_seen_at timestamptz,
  created_at timestamptz NOT NULL DEFAULT now(),
  updated_at timestamptz NOT NULL
);
CREATE INDEX devices_tenant ON devices (tenant_id);

CREATE TABLE alerts (
  id text COLLATE "C" PRIMARY KEY,
  tenant_id text NOT NULL REFERENCES tenants(id),
  device_id text NOT NULL REFERENCES devices(id) ON DELETE CASCADE,
  severity text NOT NULL,
  message text NOT NULL,
  status text NOT NULL DEFAULT 'OPEN',
  created_at timestamptz NOT NULL DEFAULT now(),
  resolved_at timestamptz
);
CREATE INDEX alerts_tenant_device ON alerts (tenant_id, device_id);
