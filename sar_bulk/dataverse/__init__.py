"""Dataverse plumbing: the org URL, tokens, the HTTP client, throttle, retry and pre-flight.

Nothing here knows which source is asking or what a dossier is: a source builds a request, this
package sends it inside the identity's service-protection limits and classifies the answer.
"""
