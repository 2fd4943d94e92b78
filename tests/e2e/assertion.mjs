// A backend-services client's side of SMART's private_key_jwt, done with `jose` (not with
// the server's own JOSE code), so the server is checked against an independent signer.
//
//   node assertion.mjs keygen ES384|RS384 KID   -> {"private": JWK, "public": JWK}
//   node assertion.mjs sign '{"alg", "key": private JWK, "clientId", "tokenUrl"}'  -> JWS
import { randomUUID } from "node:crypto";
import { SignJWT, exportJWK, generateKeyPair, importJWK } from "jose";

const [command, ...args] = process.argv.slice(2);
if (command === "keygen") {
  const [alg, kid] = args;
  const { publicKey, privateKey } = await generateKeyPair(alg, { extractable: true });
  const pub = { ...(await exportJWK(publicKey)), kid, alg, use: "sig" };
  const priv = { ...(await exportJWK(privateKey)), kid, alg };
  process.stdout.write(JSON.stringify({ private: priv, public: pub }) + "\n");
} else if (command === "sign") {
  const { alg, key, clientId, tokenUrl } = JSON.parse(args[0]);
  const signed = await new SignJWT({})
    .setProtectedHeader({ alg, kid: key.kid, typ: "JWT" })
    .setIssuer(clientId)
    .setSubject(clientId)
    .setAudience(tokenUrl)
    .setJti(randomUUID())
    .setIssuedAt()
    .setExpirationTime("4m")
    .sign(await importJWK(key, alg));
  process.stdout.write(signed + "\n");
} else {
  process.stderr.write("usage: node assertion.mjs keygen ALG KID | sign JSON\n");
  process.exit(2);
}
