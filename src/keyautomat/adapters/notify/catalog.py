"""The words of every message, per language and notification type.

Each (language, type) entry has a ``subject`` (email), a ``lead`` (the first
sentence of the email) and an ``sms`` opening. ``labels`` are the words the
layouts share. A missing entry or label falls back to English (notifications.md
§5). The layouts that arrange them live in ``templates/``.

SMS openings are kept short: the layout adds the pincode right after them,
then the place and the period, and the whole must fit two SMS segments.
"""

from __future__ import annotations

from collections.abc import Mapping

Entry = Mapping[str, str]

MESSAGES: Mapping[str, Mapping[str, Entry]] = {
    "en": {
        "contractCreated": {
            "subject": "Your key is ready",
            "lead": "A key has been reserved for you. Use the pincode below at the key automat.",
            "sms": "Your key is ready.",
        },
        "contractUpdated": {
            "subject": "Your key reservation has changed",
            "lead": "Your key reservation has been updated. These are the current details.",
            "sms": "Your key reservation changed.",
        },
        "contractKeyFetched": {
            "subject": "Key picked up",
            "lead": "The key has been picked up.",
            "sms": "Key picked up:",
        },
        "contractKeyReturned": {
            "subject": "Key returned",
            "lead": "The key has been returned. Thank you!",
            "sms": "Key returned, thank you:",
        },
        "contractStartReminder": {
            "subject": "Reminder: your key is available soon",
            "lead": "A reminder: your key will be available soon.",
            "sms": "Reminder: your key is available soon.",
        },
        "contractEndReminder": {
            "subject": "Reminder: please return the key",
            "lead": "A reminder: your key reservation ends soon. Please return the key in time.",
            "sms": "Reminder: please return the key by",
        },
        "contractKeysNotReturned": {
            "subject": "Keys not returned",
            "lead": "Your key reservation has ended, but these keys have not been returned. "
            "Please return them as soon as possible.",
            "sms": "Keys not returned, please return them now:",
        },
        "contractSignatureRequested": {
            "subject": "Please sign to get your key",
            "lead": "Before you can pick up your key, please confirm your identity and sign "
            "using the link below.",
            "sms": "Please sign before picking up your key:",
        },
        "contractKeyDelayed": {
            "subject": "Your key is not back yet",
            "lead": "The previous user has not returned the key of your reservation yet. "
            "We will message you as soon as it is back; your pincode works from then on.",
            "sms": "Your key is not back yet, we will message you when it is:",
        },
        "contractKeyAvailable": {
            "subject": "Your key is ready now",
            "lead": "The key is back and ready for you. Use the pincode below at the key automat.",
            "sms": "Your key is ready now.",
        },
    },
    "fi": {
        "contractCreated": {
            "subject": "Avaimesi on valmiina",
            "lead": "Sinulle on varattu avain. Käytä alla olevaa PIN-koodia avainautomaatilla.",
            "sms": "Avaimesi on valmiina.",
        },
        "contractUpdated": {
            "subject": "Avainvarauksesi on muuttunut",
            "lead": "Avainvaraustasi on muutettu. Alla ovat voimassa olevat tiedot.",
            "sms": "Avainvarauksesi muuttui.",
        },
        "contractKeyFetched": {
            "subject": "Avain noudettu",
            "lead": "Avain on noudettu.",
            "sms": "Avain noudettu:",
        },
        "contractKeyReturned": {
            "subject": "Avain palautettu",
            "lead": "Avain on palautettu. Kiitos!",
            "sms": "Avain palautettu, kiitos:",
        },
        "contractStartReminder": {
            "subject": "Muistutus: avaimesi on pian noudettavissa",
            "lead": "Muistutus: avaimesi on pian noudettavissa.",
            "sms": "Muistutus: avaimesi on pian noudettavissa.",
        },
        "contractEndReminder": {
            "subject": "Muistutus: palauta avain",
            "lead": "Muistutus: avainvarauksesi päättyy pian. Palautathan avaimen ajoissa.",
            "sms": "Muistutus: palauta avain viimeistään",
        },
        "contractKeysNotReturned": {
            "subject": "Avaimia ei ole palautettu",
            "lead": "Avainvarauksesi on päättynyt, mutta näitä avaimia ei ole palautettu. "
            "Palauta ne mahdollisimman pian.",
            "sms": "Avaimia ei ole palautettu, palauta ne heti:",
        },
        "contractSignatureRequested": {
            "subject": "Allekirjoita noutaaksesi avaimen",
            "lead": "Ennen avaimen noutoa vahvista henkilöllisyytesi ja allekirjoita alla "
            "olevasta linkistä.",
            "sms": "Allekirjoita ennen avaimen noutoa:",
        },
        "contractKeyDelayed": {
            "subject": "Avaimesi ei ole vielä palautunut",
            "lead": "Edellinen käyttäjä ei ole vielä palauttanut varauksesi avainta. "
            "Ilmoitamme heti, kun avain on palautettu; PIN-koodisi toimii siitä lähtien.",
            "sms": "Avaimesi ei ole vielä palautunut, ilmoitamme kun se on:",
        },
        "contractKeyAvailable": {
            "subject": "Avaimesi on nyt valmiina",
            "lead": "Avain on palautettu ja valmiina sinulle. Käytä alla olevaa PIN-koodia "
            "avainautomaatilla.",
            "sms": "Avaimesi on nyt valmiina.",
        },
    },
    "sv": {
        "contractCreated": {
            "subject": "Din nyckel är klar",
            "lead": "En nyckel har reserverats för dig. Använd pinkoden nedan vid nyckelautomaten.",
            "sms": "Din nyckel är klar.",
        },
        "contractUpdated": {
            "subject": "Din nyckelbokning har ändrats",
            "lead": "Din nyckelbokning har uppdaterats. Här är de aktuella uppgifterna.",
            "sms": "Din nyckelbokning har ändrats.",
        },
        "contractKeyFetched": {
            "subject": "Nyckeln har hämtats",
            "lead": "Nyckeln har hämtats.",
            "sms": "Nyckeln hämtad:",
        },
        "contractKeyReturned": {
            "subject": "Nyckeln har återlämnats",
            "lead": "Nyckeln har återlämnats. Tack!",
            "sms": "Nyckeln återlämnad, tack:",
        },
        "contractStartReminder": {
            "subject": "Påminnelse: din nyckel finns snart att hämta",
            "lead": "En påminnelse: din nyckel finns snart att hämta.",
            "sms": "Påminnelse: din nyckel finns snart att hämta.",
        },
        "contractEndReminder": {
            "subject": "Påminnelse: lämna tillbaka nyckeln",
            "lead": "En påminnelse: din nyckelbokning upphör snart. Lämna tillbaka nyckeln i tid.",
            "sms": "Påminnelse: lämna tillbaka nyckeln senast",
        },
        "contractKeysNotReturned": {
            "subject": "Nycklar har inte återlämnats",
            "lead": "Din nyckelbokning har upphört, men dessa nycklar har inte återlämnats. "
            "Lämna tillbaka dem så snart som möjligt.",
            "sms": "Nycklar ej återlämnade, lämna tillbaka dem nu:",
        },
        "contractSignatureRequested": {
            "subject": "Signera för att hämta din nyckel",
            "lead": "Innan du hämtar nyckeln, bekräfta din identitet och signera via länken nedan.",
            "sms": "Signera innan du hämtar nyckeln:",
        },
        "contractKeyDelayed": {
            "subject": "Din nyckel är inte tillbaka än",
            "lead": "Föregående användare har ännu inte lämnat tillbaka nyckeln till din bokning. "
            "Vi meddelar dig så snart den är tillbaka; din pinkod fungerar från och med då.",
            "sms": "Din nyckel är inte tillbaka än, vi meddelar dig när den är det:",
        },
        "contractKeyAvailable": {
            "subject": "Din nyckel är klar nu",
            "lead": "Nyckeln är tillbaka och klar för dig. Använd pinkoden nedan vid "
            "nyckelautomaten.",
            "sms": "Din nyckel är klar nu.",
        },
    },
    "de": {
        "contractCreated": {
            "subject": "Ihr Schlüssel ist bereit",
            "lead": "Für Sie wurde ein Schlüssel reserviert. Verwenden Sie den PIN-Code unten "
            "am Schlüsselautomaten.",
            "sms": "Ihr Schlüssel ist bereit.",
        },
        "contractUpdated": {
            "subject": "Ihre Schlüsselreservierung wurde geändert",
            "lead": "Ihre Schlüsselreservierung wurde geändert. Dies sind die aktuellen Angaben.",
            "sms": "Ihre Schlüsselreservierung wurde geändert.",
        },
        "contractKeyFetched": {
            "subject": "Schlüssel abgeholt",
            "lead": "Der Schlüssel wurde abgeholt.",
            "sms": "Schlüssel abgeholt:",
        },
        "contractKeyReturned": {
            "subject": "Schlüssel zurückgegeben",
            "lead": "Der Schlüssel wurde zurückgegeben. Vielen Dank!",
            "sms": "Schlüssel zurückgegeben, danke:",
        },
        "contractStartReminder": {
            "subject": "Erinnerung: Ihr Schlüssel ist bald abholbereit",
            "lead": "Eine Erinnerung: Ihr Schlüssel ist bald abholbereit.",
            "sms": "Erinnerung: Ihr Schlüssel ist bald abholbereit.",
        },
        "contractEndReminder": {
            "subject": "Erinnerung: Bitte geben Sie den Schlüssel zurück",
            "lead": "Eine Erinnerung: Ihre Reservierung endet bald. Bitte geben Sie den "
            "Schlüssel rechtzeitig zurück.",
            "sms": "Erinnerung: Schlüssel bitte zurückgeben bis",
        },
        "contractKeysNotReturned": {
            "subject": "Schlüssel nicht zurückgegeben",
            "lead": "Ihre Reservierung ist beendet, aber diese Schlüssel wurden nicht "
            "zurückgegeben. Bitte geben Sie sie so bald wie möglich zurück.",
            "sms": "Schlüssel nicht zurückgegeben, bitte sofort zurückgeben:",
        },
        "contractSignatureRequested": {
            "subject": "Bitte unterschreiben Sie, um Ihren Schlüssel abzuholen",
            "lead": "Bevor Sie den Schlüssel abholen, bestätigen Sie bitte Ihre Identität und "
            "unterschreiben Sie über den Link unten.",
            "sms": "Bitte vor der Abholung unterschreiben:",
        },
        "contractKeyDelayed": {
            "subject": "Ihr Schlüssel ist noch nicht zurück",
            "lead": "Der vorherige Nutzer hat den Schlüssel Ihrer Reservierung noch nicht "
            "zurückgegeben. Wir melden uns, sobald er zurück ist; Ihr PIN-Code gilt ab dann.",
            "sms": "Ihr Schlüssel ist noch nicht zurück, wir melden uns, sobald er da ist:",
        },
        "contractKeyAvailable": {
            "subject": "Ihr Schlüssel ist jetzt bereit",
            "lead": "Der Schlüssel ist zurück und für Sie bereit. Verwenden Sie den PIN-Code "
            "unten am Schlüsselautomaten.",
            "sms": "Ihr Schlüssel ist jetzt bereit.",
        },
    },
    "no": {
        "contractCreated": {
            "subject": "Nøkkelen din er klar",
            "lead": "En nøkkel er reservert for deg. Bruk PIN-koden nedenfor på nøkkelautomaten.",
            "sms": "Nøkkelen din er klar.",
        },
        "contractUpdated": {
            "subject": "Nøkkelreservasjonen din er endret",
            "lead": "Nøkkelreservasjonen din er oppdatert. Her er de gjeldende opplysningene.",
            "sms": "Nøkkelreservasjonen din er endret.",
        },
        "contractKeyFetched": {
            "subject": "Nøkkelen er hentet",
            "lead": "Nøkkelen er hentet.",
            "sms": "Nøkkel hentet:",
        },
        "contractKeyReturned": {
            "subject": "Nøkkelen er levert tilbake",
            "lead": "Nøkkelen er levert tilbake. Takk!",
            "sms": "Nøkkel levert, takk:",
        },
        "contractStartReminder": {
            "subject": "Påminnelse: nøkkelen din kan snart hentes",
            "lead": "En påminnelse: nøkkelen din kan snart hentes.",
            "sms": "Påminnelse: nøkkelen din kan snart hentes.",
        },
        "contractEndReminder": {
            "subject": "Påminnelse: lever tilbake nøkkelen",
            "lead": "En påminnelse: reservasjonen din slutter snart. "
            "Lever nøkkelen tilbake i tide.",
            "sms": "Påminnelse: lever nøkkelen innen",
        },
        "contractKeysNotReturned": {
            "subject": "Nøkler er ikke levert tilbake",
            "lead": "Reservasjonen din er avsluttet, men disse nøklene er ikke levert tilbake. "
            "Lever dem så snart som mulig.",
            "sms": "Nøkler ikke levert, lever dem nå:",
        },
        "contractSignatureRequested": {
            "subject": "Signer for å hente nøkkelen",
            "lead": "Før du henter nøkkelen, bekreft identiteten din og signer via lenken "
            "nedenfor.",
            "sms": "Signer før du henter nøkkelen:",
        },
        "contractKeyDelayed": {
            "subject": "Nøkkelen din er ikke tilbake ennå",
            "lead": "Forrige bruker har ennå ikke levert tilbake nøkkelen til reservasjonen din. "
            "Vi gir deg beskjed så snart den er tilbake; PIN-koden din virker fra da av.",
            "sms": "Nøkkelen din er ikke tilbake ennå, vi gir beskjed når den er det:",
        },
        "contractKeyAvailable": {
            "subject": "Nøkkelen din er klar nå",
            "lead": "Nøkkelen er tilbake og klar for deg. Bruk PIN-koden nedenfor på "
            "nøkkelautomaten.",
            "sms": "Nøkkelen din er klar nå.",
        },
    },
    "fr": {
        "contractCreated": {
            "subject": "Votre clé est prête",
            "lead": "Une clé vous a été réservée. Utilisez le code PIN ci-dessous sur la borne "
            "à clés.",
            "sms": "Votre clé est prête.",
        },
        "contractUpdated": {
            "subject": "Votre réservation de clé a changé",
            "lead": "Votre réservation de clé a été modifiée. Voici les informations à jour.",
            "sms": "Votre réservation de clé a changé.",
        },
        "contractKeyFetched": {
            "subject": "Clé retirée",
            "lead": "La clé a été retirée.",
            "sms": "Clé retirée :",
        },
        "contractKeyReturned": {
            "subject": "Clé rendue",
            "lead": "La clé a été rendue. Merci !",
            "sms": "Clé rendue, merci :",
        },
        "contractStartReminder": {
            "subject": "Rappel : votre clé sera bientôt disponible",
            "lead": "Un rappel : votre clé sera bientôt disponible.",
            "sms": "Rappel : votre clé sera bientôt disponible.",
        },
        "contractEndReminder": {
            "subject": "Rappel : merci de rendre la clé",
            "lead": "Un rappel : votre réservation se termine bientôt. Merci de rendre la clé "
            "à temps.",
            "sms": "Rappel : rendez la clé avant le",
        },
        "contractKeysNotReturned": {
            "subject": "Clés non rendues",
            "lead": "Votre réservation est terminée, mais ces clés n'ont pas été rendues. "
            "Merci de les rendre au plus vite.",
            "sms": "Clés non rendues, merci de les rendre :",
        },
        "contractSignatureRequested": {
            "subject": "Signez pour retirer votre clé",
            "lead": "Avant de retirer votre clé, confirmez votre identité et signez via le lien "
            "ci-dessous.",
            "sms": "Signez avant de retirer votre clé :",
        },
        "contractKeyDelayed": {
            "subject": "Votre clé n'est pas encore revenue",
            "lead": "L'utilisateur précédent n'a pas encore rendu la clé de votre réservation. "
            "Nous vous préviendrons dès son retour ; votre code PIN fonctionnera dès lors.",
            "sms": "Votre clé n'est pas encore revenue, nous vous préviendrons à son retour :",
        },
        "contractKeyAvailable": {
            "subject": "Votre clé est prête maintenant",
            "lead": "La clé est de retour et prête pour vous. Utilisez le code PIN ci-dessous "
            "sur la borne à clés.",
            "sms": "Votre clé est prête maintenant.",
        },
    },
}

LABELS: Mapping[str, Mapping[str, str]] = {
    "en": {
        "hello": "Hello",
        "pincode": "PIN",
        "key": "Key",
        "place": "Where",
        "valid": "Valid",
        "since": "from {start}",
        "return_by": "Return by",
        "pick_up_info": "Pick-up info",
        "missing": "Keys not returned",
        "sign": "Sign here",
        "footer": "This is an automated message from {sender}.",
    },
    "fi": {
        "hello": "Hei",
        "pincode": "PIN",
        "key": "Avain",
        "place": "Paikka",
        "valid": "Voimassa",
        "since": "{start} alkaen",
        "return_by": "Palautus viimeistään",
        "pick_up_info": "Nouto-ohje",
        "missing": "Palauttamatta",
        "sign": "Allekirjoita",
        "footer": "Tämä on automaattinen viesti lähettäjältä {sender}.",
    },
    "sv": {
        "hello": "Hej",
        "pincode": "PIN",
        "key": "Nyckel",
        "place": "Plats",
        "valid": "Giltig",
        "since": "från {start}",
        "return_by": "Lämnas senast",
        "pick_up_info": "Hämtningsinfo",
        "missing": "Ej återlämnade",
        "sign": "Signera här",
        "footer": "Detta är ett automatiskt meddelande från {sender}.",
    },
    "de": {
        "hello": "Hallo",
        "pincode": "PIN",
        "key": "Schlüssel",
        "place": "Ort",
        "valid": "Gültig",
        "since": "ab {start}",
        "return_by": "Rückgabe bis",
        "pick_up_info": "Abholhinweis",
        "missing": "Nicht zurückgegeben",
        "sign": "Hier unterschreiben",
        "footer": "Dies ist eine automatische Nachricht von {sender}.",
    },
    "no": {
        "hello": "Hei",
        "pincode": "PIN",
        "key": "Nøkkel",
        "place": "Sted",
        "valid": "Gyldig",
        "since": "fra {start}",
        "return_by": "Leveres innen",
        "pick_up_info": "Henteinfo",
        "missing": "Ikke levert",
        "sign": "Signer her",
        "footer": "Dette er en automatisk melding fra {sender}.",
    },
    "fr": {
        "hello": "Bonjour",
        "pincode": "PIN",
        "key": "Clé",
        "place": "Lieu",
        "valid": "Valable",
        "since": "à partir du {start}",
        "return_by": "À rendre avant le",
        "pick_up_info": "Retrait",
        "missing": "Non rendues",
        "sign": "Signer ici",
        "footer": "Ceci est un message automatique de {sender}.",
    },
}

# Subjects of the notices to a unit's admins (service_layer/admin_notices.py); their
# bodies are the layouts in ``templates/notices/``. Admin notices are in English.
NOTICE_SUBJECTS: Mapping[str, str] = {
    "webhookSubscriptionDisabled": 'Webhook subscription "{name}" disabled',
    "keyDelayed": "Key {key} is late for contract {contract}",
    "keysOverdue": "Keys of contract {contract} not returned",
}
