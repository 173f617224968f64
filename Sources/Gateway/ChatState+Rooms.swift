import Foundation
import KafkaNIO

// The state tail: rooms, their state and members.
extension ChatState {
    /// A state record: the room's current state and membership. A local
    /// user's leaving drops the room from the timeline cache (the fan-out
    /// may stop sending it here); the member is woken.
    func applyState(_ record: StoredRecord) {
        guard let value = record.value, let stored = MatrixJSON.decodeRecord(StoredEvent.self, from: value),
              let roomID = stored.roomID, let stateKey = stored.stateKey, let eventID = stored.eventID,
              let json = String(validating: value, as: UTF8.self) else {
            cache.advance(state: record.offset + 1)
            return
        }
        let membership = stored.type == "m.room.member" ? stored.content["membership"]?.string : nil
        let event = RoomEvent(roomID: roomID, eventID: eventID, type: stored.type, sender: stored.sender, stateKey: stateKey, membership: membership,
                              partition: partition(ofRoom: roomID), offset: -1, json: json)
        directory.apply(event, stateKey: stateKey, offset: record.offset)
        if let membership, membership != "join", registration.isLocal(stateKey) {
            cache.forget(roomID: roomID)
        }
        cache.advance(state: record.offset + 1)
        if membership != nil {
            generations.bump([stateKey])
            syncWaiters.wake(stateKey, with: ())
        }
    }
}
