-- Memories of each configured embedder's length: all-MiniLM-L6-v2 gives 384 dimensions, Amazon
-- Titan Text Embeddings V2 256, 512 or 1,024. The column takes any of them; each length has its
-- own HNSW index over the rows of that length (pgvector indexes one length per index, through
-- an expression and a partial predicate). A query names its length, so it uses its index.
drop index memories_embedding;
alter table memories alter column embedding type vector;
alter table memories add column dims smallint generated always as (vector_dims(embedding)) stored;
alter table memories add constraint memories_dims check (dims in (256, 384, 512, 1024));
create index memories_embedding_256 on memories
    using hnsw ((embedding::vector(256)) vector_cosine_ops) where dims = 256;
create index memories_embedding_384 on memories
    using hnsw ((embedding::vector(384)) vector_cosine_ops) where dims = 384;
create index memories_embedding_512 on memories
    using hnsw ((embedding::vector(512)) vector_cosine_ops) where dims = 512;
create index memories_embedding_1024 on memories
    using hnsw ((embedding::vector(1024)) vector_cosine_ops) where dims = 1024;
