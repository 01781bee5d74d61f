// What the examples' applications write while their migrations run: the old path's tables throughout, the new path's
// once traffic moves.
import type { Op } from './writers';

const pick = <T>(rnd: () => number, xs: readonly T[]): T => xs[Math.floor(rnd() * xs.length)];
const id = (rnd: () => number, max: number) => 1 + Math.floor(rnd() * max);

/** cameras_old, as the legacy application writes it (text IPs, WxH resolutions, 0/1, JSON text). */
export function camerasOldOps(maxId: number): Op[] {
  return [
    async (pool, rnd, s) => {
      const n = Math.floor(rnd() * 250);
      await pool.query(
        `INSERT INTO cameras_old (name, ip_address, rtsp_url, resolution, is_active, config)
         VALUES ($1, $2::text, 'rtsp://' || $2::text || '/live', $3, $4, $5)`,
        [
          `Cam new ${n}`,
          `192.168.${n}.${1 + (n % 200)}`,
          pick(rnd, ['1280x720', '1920x1080']),
          n % 2,
          `{"zones": ${n % 5}}`,
        ],
      );
      s.inserts++;
    },
    async (pool, rnd, s) => {
      await pool.query(
        `UPDATE cameras_old SET status = $1, fps = fps + 1, config = $2, updated_at = now() AT TIME ZONE 'UTC' WHERE id = $3`,
        [pick(rnd, ['online', 'offline', 'maintenance']), `{"nightMode": ${rnd() < 0.5}}`, id(rnd, maxId)],
      );
      s.updates++;
    },
    async (pool, rnd, s) => {
      await pool.query(`UPDATE cameras_old SET resolution = '2560x1440', ip_address = '10.99.0.' || $1 WHERE id = $2`, [
        Math.floor(rnd() * 250),
        id(rnd, maxId),
      ]);
      s.updates++;
    },
    async (pool, rnd, s) => {
      await pool.query(`DELETE FROM cameras_old WHERE id = $1`, [id(rnd, maxId)]);
      s.deletes++;
    },
  ];
}

/** cameras, as the new application writes it once the flag sends it there (ids from the old table's sequence). */
export function camerasOps(maxId: number): Op[] {
  return [
    async (pool, rnd, s) => {
      const n = Math.floor(rnd() * 250);
      await pool.query(
        `INSERT INTO cameras (id, name, ip_address, port, rtsp_url, resolution_width, resolution_height, fps, status,
                              is_active, config, created_at, updated_at)
         VALUES (nextval('cameras_old_id_seq'), $1::text, $2::inet, 554, 'rtsp://v2/' || $1::text, 3840, 2160, 30, 'online',
                 $3, jsonb_build_object('zones', $4::int), date_trunc('second', now()), date_trunc('second', now()))`,
        [`Cam v2 ${n}`, `172.16.${n}.9`, rnd() < 0.5, n % 7],
      );
      s.inserts++;
    },
    async (pool, rnd, s) => {
      await pool.query(
        `UPDATE cameras SET is_active = NOT is_active, resolution_width = 1280, resolution_height = 720 WHERE id = $1`,
        [id(rnd, maxId)],
      );
      s.updates++;
    },
    async (pool, rnd, s) => {
      await pool.query(`DELETE FROM cameras WHERE id = $1`, [id(rnd, maxId)]);
      s.deletes++;
    },
  ];
}

/** The consolidation's seven tables: requests, admin settings, Spotify tokens, sessions, event settings, notices. */
export function consolidationOldOps(events: string[], admins: number, maxRequest: number): Op[] {
  return [
    async (pool, rnd, s) => {
      await pool.query(
        `INSERT INTO requests (event_code, song_title, artist, guest_name, votes) VALUES ($1, $2, 'Queen', $3, 0)`,
        [pick(rnd, events), `Song ${Math.floor(rnd() * 1e6)}`, rnd() < 0.3 ? null : 'Guest'],
      );
      s.inserts++;
    },
    async (pool, rnd, s) => {
      await pool.query(`UPDATE requests SET votes = votes + 1, status = $1 WHERE id = $2`, [
        pick(rnd, ['queued', 'played', 'rejected']),
        id(rnd, maxRequest),
      ]);
      s.updates++;
    },
    async (pool, rnd, s) => {
      await pool.query(`DELETE FROM requests WHERE id = $1`, [id(rnd, maxRequest)]);
      s.deletes++;
    },
    async (pool, rnd, s) => {
      // Folded into users.preferences: insert or change one setting.
      await pool.query(
        `INSERT INTO settings (admin_id, key, value) VALUES ($1, $2, $3)
         ON CONFLICT (admin_id, key) DO UPDATE SET value = EXCLUDED.value`,
        [id(rnd, admins), pick(rnd, ['language', 'theme', 'emailDigest']), `v${Math.floor(rnd() * 100)}`],
      );
      s.updates++;
    },
    async (pool, rnd, s) => {
      // The optional side of users: a Spotify link refreshed, added or removed.
      const admin = id(rnd, admins);
      if (rnd() < 0.2) {
        await pool.query(`DELETE FROM spotify_auth WHERE admin_id = $1`, [admin]);
        s.deletes++;
      } else {
        await pool.query(
          `INSERT INTO spotify_auth (admin_id, spotify_user_id, access_token, refresh_token, expires_at)
           VALUES ($1::int, 'spotify:new' || $1::int, md5(random()::text), md5(random()::text), now() + interval '1 hour')
           ON CONFLICT (admin_id) DO UPDATE SET access_token = EXCLUDED.access_token, expires_at = EXCLUDED.expires_at`,
          [admin],
        );
        s.updates++;
      }
    },
    async (pool, rnd, s) => {
      // Folded into events.announcements.
      if (rnd() < 0.3) {
        await pool.query(
          `DELETE FROM notifications WHERE id = (SELECT min(id) FROM notifications WHERE event_code = $1)`,
          [pick(rnd, events)],
        );
        s.deletes++;
      } else {
        await pool.query(`INSERT INTO notifications (event_code, message, level) VALUES ($1, $2, 'info')`, [
          pick(rnd, events),
          `Now playing #${Math.floor(rnd() * 1000)}`,
        ]);
        s.inserts++;
      }
    },
    async (pool, rnd, s) => {
      await pool.query(
        `UPDATE event_settings SET theme = $1, voting_enabled = NOT voting_enabled WHERE event_code = $2`,
        [pick(rnd, ['neon', 'retro', 'default']), pick(rnd, events)],
      );
      s.updates++;
    },
    async (pool, rnd, s) => {
      await pool.query(
        `INSERT INTO oauth_sessions (admin_id, provider, session_token, expires_at)
         VALUES ($1, 'google', md5(random()::text), now() + interval '1 day')`,
        [id(rnd, admins)],
      );
      s.inserts++;
    },
  ];
}

/** The consolidated tables the new path writes and syncs back: song requests and sessions. */
export function consolidationNewOps(events: string[], admins: number, maxRequest: number): Op[] {
  return [
    async (pool, rnd, s) => {
      await pool.query(
        `INSERT INTO song_requests (id, event_code, title, artist, requested_by, status, votes, created_at)
         VALUES (nextval('requests_id_seq'), $1, $2, 'Daft Punk', 'v2 guest', 'pending', 0, now())`,
        [pick(rnd, events), `v2 song ${Math.floor(rnd() * 1e6)}`],
      );
      s.inserts++;
    },
    async (pool, rnd, s) => {
      await pool.query(`UPDATE song_requests SET votes = votes + 2, title = title || '!' WHERE id = $1`, [
        id(rnd, maxRequest),
      ]);
      s.updates++;
    },
    async (pool, rnd, s) => {
      await pool.query(`DELETE FROM song_requests WHERE id = $1`, [id(rnd, maxRequest)]);
      s.deletes++;
    },
    async (pool, rnd, s) => {
      await pool.query(
        `INSERT INTO auth_sessions (id, user_id, provider, token, expires_at, created_at)
         VALUES (nextval('oauth_sessions_id_seq'), $1, 'apple', md5(random()::text), now() + interval '1 day', now())`,
        [id(rnd, admins)],
      );
      s.inserts++;
    },
  ];
}

/** The admin screens on the new path: users (their preferences and Spotify link) and events (settings, announcements). */
export function consolidationAdminOps(events: string[], admins: number): Op[] {
  return [
    async (pool, rnd, s) => {
      // A preference set, another removed.
      await pool.query(
        `UPDATE users SET display_name = $2, preferences = (preferences - 'lang') || jsonb_build_object('theme', $3::text) WHERE id = $1`,
        [id(rnd, admins), `v2 admin ${Math.floor(rnd() * 1e6)}`, pick(rnd, ['dark', 'light', 'neon'])],
      );
      s.updates++;
    },
    async (pool, rnd, s) => {
      // The Spotify link made or refreshed, or cleared.
      if (rnd() < 0.3) {
        await pool.query(
          `UPDATE users SET spotify_user_id = NULL, spotify_access_token = NULL, spotify_refresh_token = NULL, spotify_expires_at = NULL WHERE id = $1`,
          [id(rnd, admins)],
        );
      } else {
        await pool.query(
          `UPDATE users SET spotify_user_id = coalesce(spotify_user_id, 'v2-' || id), spotify_access_token = md5(random()::text),
                            spotify_refresh_token = md5(random()::text), spotify_expires_at = date_trunc('second', now()) + interval '1 hour'
            WHERE id = $1`,
          [id(rnd, admins)],
        );
      }
      s.updates++;
    },
    async (pool, rnd, s) => {
      await pool.query(
        `INSERT INTO users (id, email, display_name, password_hash, preferences, created_at)
         VALUES (nextval('admins_id_seq'), 'v2-' || md5(random()::text) || '@example.com', 'v2 admin', 'x', '{"lang": "en"}', now())`,
      );
      s.inserts++;
    },
    async (pool, rnd, s) => {
      await pool.query(
        `UPDATE events SET settings = settings || jsonb_build_object('theme', $2::text, 'votingEnabled', $3::boolean) WHERE event_code = $1`,
        [pick(rnd, events), pick(rnd, ['party', 'calm']), rnd() < 0.5],
      );
      s.updates++;
    },
    async (pool, rnd, s) => {
      // An announcement appended as the new screens write it: message, level, time.
      await pool.query(
        `UPDATE events SET announcements = announcements || jsonb_build_array(jsonb_build_object(
           'message', $2::text, 'level', 'info', 'at', to_char(now() AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS.US"Z"')))
          WHERE event_code = $1`,
        [pick(rnd, events), `v2 announcement ${Math.floor(rnd() * 1e6)}`],
      );
      s.updates++;
    },
  ];
}

/** The generic engine on the new path: weddings and their participants, as the wedding mapping shapes them. */
export function eventsEngineOps(weddings: number): Op[] {
  return [
    async (pool, rnd, s) => {
      // Two statements, as the engine's API makes them: the wedding, then its guests.
      const [e] = (
        await pool.query(
          `INSERT INTO events (event_type, tenant_id, title, start_date, venue, status, details)
           VALUES ('wedding', md5('tenant2')::uuid, $1, date '2026-06-20', 'Lake House', 'planning', '{"source": "wedding-app"}')
           RETURNING id`,
          [`Engine couple ${Math.floor(rnd() * 1e6)}`],
        )
      ).rows;
      await pool.query(
        `INSERT INTO event_participants (event_id, role, name, rsvp_status, details)
         SELECT $1::uuid, 'guest', 'Engine guest ' || g, 'pending', jsonb_build_object('plusOnes', g % 2, 'tableNumber', NULL)
           FROM generate_series(1, 2) AS g`,
        [e.id],
      );
      s.inserts++;
    },
    async (pool, rnd, s) => {
      await pool.query(
        `UPDATE events SET status = $1, capacity = coalesce(capacity, 0) + 10 WHERE legacy_wedding_id = $2`,
        [pick(rnd, ['confirmed', 'completed']), id(rnd, weddings)],
      );
      s.updates++;
    },
    async (pool, rnd, s) => {
      await pool.query(
        `UPDATE event_participants SET rsvp_status = $1, details = jsonb_set(details, '{tableNumber}', to_jsonb($2::int))
          WHERE id = (SELECT id FROM event_participants ORDER BY legacy_invitation_id OFFSET $3 LIMIT 1)`,
        [pick(rnd, ['accepted', 'declined']), id(rnd, 20), id(rnd, weddings)],
      );
      s.updates++;
    },
    async (pool, rnd, s) => {
      await pool.query(
        `DELETE FROM event_participants WHERE id = (SELECT id FROM event_participants ORDER BY legacy_invitation_id OFFSET $1 LIMIT 1)`,
        [id(rnd, weddings)],
      );
      s.deletes++;
    },
  ];
}

/** The wedding app's own writes: weddings and invitations (a wedding deleted takes its invitations along). */
export function weddingOps(weddings: number, invitations: number): Op[] {
  return [
    async (pool, rnd, s) => {
      await pool.query(
        `WITH w AS (INSERT INTO wedding_events (tenant_id, couple_name, wedding_date, venue)
                    VALUES (md5('tenant1')::uuid, $1, date '2026-02-14', 'Garden Villa') RETURNING id)
         INSERT INTO wedding_invitations (wedding_event_id, guest_name, guest_email, plus_ones)
         SELECT w.id, 'New guest ' || g, NULL, g % 2 FROM w, generate_series(1, 3) AS g`,
        [`New couple ${Math.floor(rnd() * 1e6)}`],
      );
      s.inserts++;
    },
    async (pool, rnd, s) => {
      await pool.query(
        `UPDATE wedding_events SET status = $1, guest_limit = coalesce(guest_limit, 0) + 5 WHERE id = $2`,
        [pick(rnd, ['confirmed', 'completed', 'cancelled']), id(rnd, weddings)],
      );
      s.updates++;
    },
    async (pool, rnd, s) => {
      await pool.query(`UPDATE wedding_invitations SET rsvp_status = $1, plus_ones = plus_ones + 1 WHERE id = $2`, [
        pick(rnd, ['accepted', 'declined']),
        id(rnd, invitations),
      ]);
      s.updates++;
    },
    async (pool, rnd, s) => {
      // An invitation moved to another wedding: its event_id changes.
      await pool.query(`UPDATE wedding_invitations SET wedding_event_id = $1 WHERE id = $2`, [
        id(rnd, weddings),
        id(rnd, invitations),
      ]);
      s.updates++;
    },
    async (pool, rnd, s) => {
      await pool.query(`DELETE FROM wedding_invitations WHERE id = $1`, [id(rnd, invitations)]);
      s.deletes++;
    },
    async (pool, rnd, s) => {
      if (rnd() < 0.5) return;
      await pool.query(`DELETE FROM wedding_events WHERE id = $1`, [id(rnd, weddings)]);
      s.deletes++;
    },
  ];
}
