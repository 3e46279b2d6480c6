"""The agent half: conversations and their messages, agent chat settings, LLM rate limits and prices.

Messages carry an embedding and a full-text vector like memories, so conversation search uses the
same pipeline. `(job_id, step_key)` is unique: a turn redelivered after a crash writes each of its
steps once. `conversations.last_seq` hands out message numbers under the row's lock.

Revision ID: 0007
Revises: 0006
"""
from alembic import op

from core.settings import get_settings

revision = "0007"
down_revision = "0006"


def upgrade() -> None:
    dim = get_settings().embedding_dim
    op.execute("""
        ALTER TABLE llm_configs
            ADD COLUMN requests_per_minute integer,
            ADD COLUMN tokens_per_minute integer,
            ADD COLUMN context_window integer,
            ADD COLUMN prompt_price_per_million double precision,
            ADD COLUMN completion_price_per_million double precision""")
    op.execute("""
        ALTER TABLE agents
            ADD COLUMN llm jsonb NOT NULL DEFAULT '{}'::jsonb,
            ADD COLUMN max_steps integer NOT NULL DEFAULT 8,
            ADD COLUMN memory_top_k integer NOT NULL DEFAULT 5,
            ADD COLUMN memory_extraction varchar(10) NOT NULL DEFAULT 'off'
                CHECK (memory_extraction IN ('off', 'facts', 'turns')),
            ADD COLUMN tool_ids uuid[] NOT NULL DEFAULT '{}'""")
    op.execute("""
        CREATE TABLE conversations (
            id uuid PRIMARY KEY,
            org_id uuid NOT NULL REFERENCES organizations(id),
            agent_id uuid NOT NULL REFERENCES agents(id),
            user_id varchar(255),
            title varchar(500),
            metadata jsonb NOT NULL DEFAULT '{}'::jsonb,
            last_seq integer NOT NULL DEFAULT 0,
            summary text,
            summary_upto integer NOT NULL DEFAULT 0,
            created_at timestamptz NOT NULL DEFAULT now(),
            updated_at timestamptz NOT NULL DEFAULT now(),
            deleted_at timestamptz
        )""")
    op.execute("CREATE INDEX ix_conversations_agent ON conversations (org_id, agent_id, created_at DESC, id DESC) "
               "WHERE deleted_at IS NULL")
    op.execute(f"""
        CREATE TABLE messages (
            id uuid PRIMARY KEY,
            org_id uuid NOT NULL REFERENCES organizations(id),
            conversation_id uuid NOT NULL REFERENCES conversations(id),
            agent_id uuid NOT NULL,
            user_id varchar(255),
            seq integer NOT NULL,
            role varchar(20) NOT NULL CHECK (role IN ('system', 'user', 'assistant', 'tool')),
            content text NOT NULL DEFAULT '',
            tool_calls jsonb,
            tool_call_id varchar(200),
            name varchar(200),
            tokens integer NOT NULL DEFAULT 0,
            prompt_tokens integer,
            completion_tokens integer,
            job_id uuid,
            step_key varchar(200),
            embedding vector({dim}),
            fts tsvector GENERATED ALWAYS AS (to_tsvector('english', content)) STORED,
            created_at timestamptz NOT NULL DEFAULT now(),
            deleted_at timestamptz,
            CONSTRAINT uq_messages_seq UNIQUE (conversation_id, seq),
            CONSTRAINT uq_messages_step UNIQUE (job_id, step_key)
        )""")
    op.execute("CREATE INDEX ix_messages_org_agent ON messages (org_id, agent_id)")
    op.execute("CREATE INDEX ix_messages_org_user ON messages (org_id, user_id)")
    op.execute("CREATE INDEX ix_messages_job ON messages (job_id) WHERE job_id IS NOT NULL")
    op.execute("CREATE INDEX ix_messages_embedding ON messages USING hnsw (embedding vector_cosine_ops)")
    op.execute("CREATE INDEX ix_messages_fts ON messages USING gin (fts)")


def downgrade() -> None:
    op.execute("DROP TABLE IF EXISTS messages")
    op.execute("DROP TABLE IF EXISTS conversations")
    op.execute("ALTER TABLE agents DROP COLUMN llm, DROP COLUMN max_steps, DROP COLUMN memory_top_k, "
               "DROP COLUMN memory_extraction, DROP COLUMN tool_ids")
    op.execute("ALTER TABLE llm_configs DROP COLUMN requests_per_minute, DROP COLUMN tokens_per_minute, "
               "DROP COLUMN context_window, DROP COLUMN prompt_price_per_million, "
               "DROP COLUMN completion_price_per_million")
