-- Memories partitioned by agent (32 hash partitions). Every read names one agent, so it reads
-- one partition: its HNSW graph holds about 1/32 of the fleet's memories, of which this agent's
-- are a large share, and the index search finds the agent's nearest without walking past the
-- rest of the fleet (one agent's 10,000 among 1,000,000 took 9 ms at the median in one graph).
create table memories_by_agent (
    id            uuid not null,
    tenant_id     uuid not null,
    agent_id      uuid not null,
    kind          text not null check (kind in ('post', 'reply', 'engagement')),
    text          text not null check (length(text) between 1 and 8000),
    embedding     vector not null,
    model         text not null check (length(model) between 1 and 200),
    platform      text check (length(platform) between 1 and 40),
    source_asset  uuid references assets (id),
    created_at    timestamptz not null default now(),
    dims          smallint generated always as (vector_dims(embedding)) stored,
    primary key (agent_id, id),
    foreign key (tenant_id, agent_id) references agents (tenant_id, id),
    constraint memories_dims check (dims in (256, 384, 512, 1024))
) partition by hash (agent_id);

do $$
begin
    for i in 0 .. 31 loop
        execute format(
            'create table memories_p%s partition of memories_by_agent for values with (modulus 32, remainder %s)',
            i, i);
    end loop;
end
$$;

insert into memories_by_agent
    (id, tenant_id, agent_id, kind, text, embedding, model, platform, source_asset, created_at)
select id, tenant_id, agent_id, kind, text, embedding, model, platform, source_asset, created_at
from memories;

drop table memories;
alter table memories_by_agent rename to memories;

create index memories_embedding_256 on memories
    using hnsw ((embedding::vector(256)) vector_cosine_ops) where dims = 256;
create index memories_embedding_384 on memories
    using hnsw ((embedding::vector(384)) vector_cosine_ops) where dims = 384;
create index memories_embedding_512 on memories
    using hnsw ((embedding::vector(512)) vector_cosine_ops) where dims = 512;
create index memories_embedding_1024 on memories
    using hnsw ((embedding::vector(1024)) vector_cosine_ops) where dims = 1024;
create index memories_agent_created on memories (agent_id, created_at);
