//! One contract, two implementations: the same suites
//! ([`ringway_tests::contracts`]) run against the in-memory store and
//! broker and against the Redis ones (a real `redis-server` per test).

use std::sync::Arc;

use ringway_backend::broker::{Broker, MemoryBus, RedisBroker};
use ringway_backend::config::RedisSettings;
use ringway_backend::redis_link::RedisLink;
use ringway_backend::store::{MemoryStore, RedisStore};
use ringway_tests::backend::RedisServer;
use ringway_tests::contracts::{broker_contract, history, store_contract};

fn link(redis: &RedisServer) -> Arc<RedisLink> {
    Arc::new(
        RedisLink::new(&RedisSettings {
            url: redis.url(),
            tls_ca: None,
            durable: false,
        })
        .expect("redis link"),
    )
}

#[tokio::test]
async fn memory_store_keeps_the_contract() {
    store_contract(MemoryStore::new()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_store_keeps_the_contract() {
    let redis = RedisServer::start().await;
    let link = link(&redis);
    store_contract(Arc::new(RedisStore::new(link.conn()))).await;
}

#[tokio::test]
async fn memory_broker_keeps_the_contract() {
    let bus = MemoryBus::new(history(10));
    broker_contract(Box::new(move |worker, events| {
        Arc::new(bus.attach(worker, events)) as Arc<dyn Broker>
    }))
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_broker_keeps_the_contract() {
    let redis = RedisServer::start().await;
    let url = redis.url();
    broker_contract(Box::new(move |worker, events| {
        let link = Arc::new(
            RedisLink::new(&RedisSettings {
                url: url.clone(),
                tls_ca: None,
                durable: false,
            })
            .expect("redis link"),
        );
        Arc::new(RedisBroker::new(link, worker, history(10), false, events)) as Arc<dyn Broker>
    }))
    .await;
}
