//! Key rotation, second half: `agentward-vault --rekey` seals every stored
//! token anew under the current key, so that an older key can leave the
//! keyring. Rows a running vault rewrites meanwhile are left to it (it seals
//! with its own current key).

use crate::seal::{link_aad, Keyring, Sealed};
use crate::store::{Store, StoreError};

/// What a rekey pass did.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct RekeyReport {
    /// Links sealed anew under the current key.
    pub resealed: u64,
    /// Links that changed while the pass ran (a refresh or relink): already
    /// rewritten by the vault that changed them.
    pub changed_meanwhile: u64,
    /// Links whose tokens could not be opened (their key is not in the
    /// keyring, or the row was tampered with); left as they are.
    pub unreadable: u64,
    /// Key ids still used by some stored value after the pass.
    pub key_ids_in_use: Vec<String>,
}

/// Seals every link's tokens under `keys`' current key.
pub async fn rekey(store: &Store, keys: &Keyring) -> Result<RekeyReport, StoreError> {
    let mut report = RekeyReport::default();
    for link in store.links_not_sealed_with(keys.current_id()).await? {
        let reseal = |purpose: &str, sealed: &Sealed| {
            let aad = link_aad(purpose, &link.user, &link.connection);
            keys.open(sealed, &aad)
                .and_then(|plain| keys.seal(&plain, &aad))
        };
        let refresh = reseal("refresh_token", &link.refresh);
        let access = link
            .access
            .as_ref()
            .map(|a| reseal("access_token", &a.sealed))
            .transpose();
        let (Ok(refresh), Ok(access)) = (refresh, access) else {
            tracing::error!(
                connection = %link.connection,
                refresh_key_id = %link.refresh.key_id,
                "cannot open a stored token for rekeying; left as it is"
            );
            report.unreadable += 1;
            continue;
        };
        if store.reseal_link(&link, &refresh, access.as_ref()).await? {
            report.resealed += 1;
        } else {
            report.changed_meanwhile += 1;
        }
    }
    report.key_ids_in_use = store.key_ids_in_use().await?;
    Ok(report)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::{CachedAccess, TokenWrite};
    use crate::subject::User;

    fn user(sub: &str) -> User {
        User::new("https://idp/", sub)
    }

    fn keyring(ids: &[&str]) -> Keyring {
        Keyring::from_keys(
            ids.iter()
                .map(|id| (id.to_string(), [id.as_bytes()[1]; 32]))
                .collect(),
        )
        .unwrap()
    }

    async fn link(store: &Store, keys: &Keyring, sub: &str, with_access: bool) {
        let seal = |purpose: &str, value: &str| {
            keys.seal(value.as_bytes(), &link_aad(purpose, &user(sub), "broker"))
                .unwrap()
        };
        let write = TokenWrite {
            refresh: Some(seal("refresh_token", &format!("rt-{sub}"))),
            access: CachedAccess {
                sealed: seal("access_token", &format!("at-{sub}")),
                expires_at: 1000,
            },
            scope: None,
        };
        store
            .save_link(&user(sub), "broker", &write, 1)
            .await
            .unwrap();
        if !with_access {
            // A link whose cached access token was dropped.
            let link = store
                .find_link(&user(sub), "broker")
                .await
                .unwrap()
                .unwrap();
            store.reseal_link(&link, &link.refresh, None).await.unwrap();
        }
    }

    async fn rekey_moves_every_token_to_the_current_key(store: &Store) {
        let k1 = keyring(&["k1"]);
        link(store, &k1, "alice", true).await;
        link(store, &k1, "bob", false).await;
        let k2 = keyring(&["k2", "k1"]);
        link(store, &k2, "carol", true).await;

        let report = rekey(store, &k2).await.unwrap();
        assert_eq!(report.resealed, 2);
        assert_eq!((report.changed_meanwhile, report.unreadable), (0, 0));
        assert_eq!(report.key_ids_in_use, vec!["k2".to_string()]);

        // k1 can go: every token opens with k2 alone, and is the same token.
        let only_k2 = keyring(&["k2"]);
        for sub in ["alice", "bob", "carol"] {
            let l = store
                .find_link(&user(sub), "broker")
                .await
                .unwrap()
                .unwrap();
            let open = |purpose, sealed| {
                only_k2
                    .open_string(sealed, &link_aad(purpose, &user(sub), "broker"))
                    .unwrap()
            };
            assert_eq!(open("refresh_token", &l.refresh), format!("rt-{sub}"));
            if let Some(a) = &l.access {
                assert_eq!(open("access_token", &a.sealed), format!("at-{sub}"));
            }
            assert_eq!(l.access.is_some(), sub != "bob");
        }
        // A second pass has nothing to do.
        assert_eq!(rekey(store, &k2).await.unwrap().resealed, 0);

        // Without the old key in the ring, rows stay as they are and say so.
        link(store, &k1, "dave", true).await;
        let report = rekey(store, &only_k2).await.unwrap();
        assert_eq!((report.resealed, report.unreadable), (0, 1));
        assert_eq!(
            report.key_ids_in_use,
            vec!["k1".to_string(), "k2".to_string()]
        );
    }

    async fn reseal_of_a_changed_row_is_refused(store: &Store) {
        let k1 = keyring(&["k1"]);
        link(store, &k1, "erin", true).await;
        let stale = store
            .find_link(&user("erin"), "broker")
            .await
            .unwrap()
            .unwrap();
        link(store, &k1, "erin", true).await; // a relink bumps the version
        assert!(!store
            .reseal_link(&stale, &stale.refresh, None)
            .await
            .unwrap());
    }

    #[tokio::test]
    async fn rekey_on_sqlite() {
        let store = Store::connect("sqlite::memory:", None).await.unwrap();
        rekey_moves_every_token_to_the_current_key(&store).await;
        reseal_of_a_changed_row_is_refused(&store).await;
    }

    #[tokio::test]
    async fn rekey_on_postgres() {
        let Some((store, schema, admin)) = crate::store::tests::postgres_store().await else {
            assert!(
                std::env::var_os("CI").is_none(),
                "PostgreSQL is required under CI"
            );
            return;
        };
        rekey_moves_every_token_to_the_current_key(&store).await;
        reseal_of_a_changed_row_is_refused(&store).await;
        store.close().await;
        let _ = sqlx::query(&format!("DROP SCHEMA \"{schema}\" CASCADE"))
            .execute(&admin)
            .await;
    }
}
