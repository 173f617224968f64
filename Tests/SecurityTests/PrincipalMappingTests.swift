import Security
import Testing

@Suite("Principals from certificate subjects")
struct PrincipalMappingTests {
    @Test("DEFAULT keeps the whole subject, as Kafka's default builder")
    func standard() {
        #expect(PrincipalMapping.standard.name(for: "CN=alice,O=Ministerie") == "CN=alice,O=Ministerie")
    }

    @Test("the first rule whose pattern matches the whole subject names the user, L and U change case")
    func rules() throws {
        let mapping = try PrincipalMapping(parsing: "RULE:^CN=([^,]*),O=Ministerie$/$1/L, RULE:^CN=([^,]*),OU=(.*),O=.*$/$1@$2/U, DEFAULT")
        #expect(mapping.name(for: "CN=Alice,O=Ministerie") == "alice")
        #expect(mapping.name(for: "CN=bob,OU=ops,O=Gov") == "BOB@OPS")
        #expect(mapping.name(for: "CN=carol") == "CN=carol")
    }

    @Test("without DEFAULT a subject no rule matches has no user")
    func noMatch() throws {
        let mapping = try PrincipalMapping(parsing: "RULE:^CN=(.*),O=Ministerie$/$1/")
        #expect(mapping.name(for: "CN=mallory,O=Elsewhere") == nil)
    }

    @Test("malformed rules are refused with the part at fault")
    func malformed() {
        #expect(throws: TLSError.self) { try PrincipalMapping(parsing: "RULE:^CN=(.*)$") }
        #expect(throws: TLSError.self) { try PrincipalMapping(parsing: "SOMETHING") }
        #expect(throws: TLSError.self) { try PrincipalMapping(parsing: "RULE:([/x/") }
    }

    @Test("principals read and print as Type:name")
    func principals() {
        #expect(Principal(parsing: "User:alice") == Principal(name: "alice"))
        #expect(Principal(parsing: "bob").description == "User:bob")
        #expect(Principal(parsing: "Group:ops").type == "Group")
    }
}
