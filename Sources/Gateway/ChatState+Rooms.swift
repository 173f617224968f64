import Foundation
import KafkaNIO
import KafkaWire
import NIOCore
import Synchronization

// Rooms, their state and members, as the chat-state topic holds them.
extension ChatState {
    func room(_ roomID: String) -> Room? { inner.withLock { $0.rooms[roomID] } }

    func membership(of userID: String, in roomID: String) -> String? {
        inner.withLock { $0.rooms[roomID]?.members[userID]?.membership }
    }

    func rooms(of userID: String) -> [(roomID: String, member: Member)] {
        inner.withLock { inner in
            (inner.roomsOfUser[userID] ?? []).compactMap { id in inner.rooms[id]?.members[userID].map { (id, $0) } }
        }
    }

    /// A room's state events as the inside of a JSON array, serialised once
    /// per state version and shared by every member's first sync: sorting
    /// and joining a 1,000-member room's state for each of its members made
    /// their first syncs quadratic.
    func stateEventsJSON(roomID: String, _ room: Room) -> String {
        if let cached = inner.withLock({ $0.stateJSON[roomID] }), cached.version == room.stateVersion {
            return cached.json
        }
        let json = room.state.values.sorted { $0.eventID < $1.eventID }.map(\.json).joined(separator: ",")
        inner.withLock { inner in
            if (inner.stateJSON[roomID]?.version ?? 0) <= room.stateVersion {
                inner.stateJSON[roomID] = (room.stateVersion, json)
            }
        }
        return json
    }

    /// A state record: the room's current state and membership indexes.
    func applyState(_ record: StoredRecord) {
        guard let value = record.value, let stored = MatrixJSON.decodeRecord(StoredEvent.self, from: value),
              let roomID = stored.roomID, let stateKey = stored.stateKey, let eventID = stored.eventID,
              let json = String(validating: value, as: UTF8.self) else {
            inner.withLock { $0.position.state = max($0.position.state, record.offset + 1) }
            return
        }
        let type = stored.type
        let membership = type == "m.room.member" ? stored.content["membership"]?.string : nil
        let event = RoomEvent(roomID: roomID, eventID: eventID, type: type, sender: stored.sender, stateKey: stateKey, membership: membership,
                              partition: partition(ofRoom: roomID), offset: -1, json: json)
        let woken = inner.withLock { inner -> [String] in
            inner.position.state = max(inner.position.state, record.offset + 1)
            var room = inner.rooms.removeValue(forKey: roomID) ?? Room()
            room.state[type + "\u{0}" + stateKey] = event
            room.stateVersion &+= 1
            var wake: [String] = []
            if let membership {
                room.members[stateKey] = Member(membership: membership, stateOffset: record.offset)
                room.summarize()
                inner.roomsOfUser[stateKey, default: []].insert(roomID)
                wake.append(stateKey)
                // A local user left: the fan-out may stop sending the room here,
                // so the cache no longer vouches for it.
                if membership != "join" && inner.localUsers[stateKey] != nil {
                    room.coveredFrom = nil
                    room.recent = []
                }
            }
            inner.rooms[roomID] = room
            Self.bumpGenerations(&inner, users: wake)
            return wake
        }
        for user in woken { syncWaiters.wake(user, with: ()) }
    }
}
