-- Semantic memory: what an agent said (and how it landed), as text and as an embedding, so
-- the planner and the drafter can find what it said before about a topic. pgvector is built
-- into Aurora PostgreSQL; the local stack builds it (scripts/stack).
create extension if not exists vector;

create table memories (
    id            uuid primary key,
    tenant_id     uuid not null,
    agent_id      uuid not null,
    -- A committed post or reply, or what came back about one (engagement).
    kind          text not null check (kind in ('post', 'reply', 'engagement')),
    text          text not null check (length(text) between 1 and 8000),
    -- all-MiniLM-L6-v2 and the other configured embedders give 384 dimensions.
    embedding     vector(384) not null,
    -- The embedder that made the vector: vectors of two models are not comparable.
    model         text not null check (length(model) between 1 and 200),
    platform      text check (length(platform) between 1 and 40),
    -- The artifact the memory is about, if any.
    source_asset  uuid references assets (id),
    created_at    timestamptz not null default now(),
    -- A memory belongs to an agent of its tenant: a query scoped to one never sees another's.
    foreign key (tenant_id, agent_id) references agents (tenant_id, id)
);
-- Nearest neighbours by cosine distance (`embedding <=> $query`).
create index memories_embedding on memories using hnsw (embedding vector_cosine_ops);
create index memories_agent_created on memories (agent_id, created_at);
